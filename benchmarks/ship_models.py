"""Copy trained models into the package as shipped models.

    python benchmarks/ship_models.py runs/ds2_long --command "python benchmarks/train_ds2.py ..."
    python benchmarks/ship_models.py MODEL_DIR --single ds2-electrons --description "..." --command "..." \
        --data-rows "..."

The first form ships the teacher and student of a ``train_ds2.py`` run; ``--single NAME`` ships
one model folder (e.g. a fitted ``copula``) under NAME.

Writes ``src/caloforge/models/pretrained/ds2-electrons-teacher/`` and ``.../ds2-electrons-cfm/``
(``model.safetensors`` copied byte for byte; ``model.json`` with the student's teacher renamed to
the shipped teacher, no pair cache, and a description, the training command and the data
rows added). Checks that both load and sample before replacing anything.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
from pathlib import Path

PRETRAINED = Path(__file__).resolve().parents[1] / "src" / "caloforge" / "models" / "pretrained"
DATA_ROWS = ("g4_ds2_electrons_1-100GeV.h5 (shared Geant4 file), rows 0-11999; rows 12000-14999 held out "
             "for evaluation")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run", type=Path, help="train_ds2.py --out folder (teacher/, student/, summary.json)")
    ap.add_argument("--command", required=True, help="the exact training command, recorded in model.json")
    ap.add_argument("--note", default="", help="appended to the descriptions (e.g. the hardware)")
    ap.add_argument("--single", default=None, metavar="NAME", help="ship the model folder RUN under NAME")
    ap.add_argument("--description", default="", help="with --single: the model's description")
    ap.add_argument("--data-rows", default=DATA_ROWS, help="with --single: the training data, in words")
    args = ap.parse_args()

    import torch

    from caloforge.models import load_model

    def check(dest: Path, name: str) -> None:
        model = load_model(dest)
        x = model.sample(torch.tensor([1e3, 1e4, 1e5]), generator=torch.Generator().manual_seed(0))
        assert torch.isfinite(x).all() and (x.sum(1) > 0).all(), f"{name} does not sample sensibly"
        print(f"{name}: {model.n_parameters():,} parameters, E_tot/E_inc of 3 showers {(x.sum(1) / torch.tensor([1e3, 1e4, 1e5])).tolist()}")

    if args.single:
        meta = json.loads((args.run / "model.json").read_text())
        meta["description"] = args.description + (f"; {args.note}" if args.note else "") + "; see TRAINING.md"
        meta["training_command"] = args.command
        meta["training_data"] = args.data_rows
        staged = Path(tempfile.mkdtemp(prefix="ship-", dir=PRETRAINED.parent))
        shutil.copyfile(args.run / "model.safetensors", staged / "model.safetensors")
        (staged / "model.json").write_text(json.dumps(meta, indent=2) + "\n")
        staged.chmod(0o755)  # mkdtemp makes it private
        check(staged, args.single)
        shutil.rmtree(PRETRAINED / args.single, ignore_errors=True)
        staged.rename(PRETRAINED / args.single)
        print(f"shipped {args.single} into {PRETRAINED}")
        return

    summary = json.loads((args.run / "summary.json").read_text()) if (args.run / "summary.json").is_file() else {}
    staged = Path(tempfile.mkdtemp(prefix="ship-", dir=PRETRAINED.parent))
    for src, name, desc in (
        ("teacher", "ds2-electrons-teacher", "conditional flow-matching teacher (CaloChallenge DS2 electrons, 1-100 GeV)"),
        ("student", "ds2-electrons-cfm", "fast one-step student of ds2-electrons-teacher (CaloChallenge DS2 electrons, 1-100 GeV)"),
    ):
        meta = json.loads((args.run / src / "model.json").read_text())
        if src == "student":
            meta["config"]["teacher"] = "ds2-electrons-teacher"
            meta["config"]["pairs_file"] = None
            meta["teacher"] = "ds2-electrons-teacher"
        training = summary.get(f"{src}_training")
        if training:
            meta["training"] = {**(meta.get("training") or {}), **training}
        meta["description"] = desc + (f"; {args.note}" if args.note else "") + "; see TRAINING.md"
        meta["training_command"] = args.command
        meta["training_data"] = DATA_ROWS
        dest = staged / name
        dest.mkdir()
        shutil.copyfile(args.run / src / "model.safetensors", dest / "model.safetensors")
        (dest / "model.json").write_text(json.dumps(meta, indent=2) + "\n")
        check(dest, name)
    for name in ("ds2-electrons-teacher", "ds2-electrons-cfm"):
        shutil.rmtree(PRETRAINED / name, ignore_errors=True)
        (staged / name).rename(PRETRAINED / name)
    staged.rmdir()
    print(f"shipped into {PRETRAINED}")


if __name__ == "__main__":
    main()
