"""Export of trained samplers for production: :func:`~caloforge.export.onnx.export_onnx` and
:class:`~caloforge.export.onnx.OnnxSampler` (``pip install 'caloforge[onnx]'``)."""
