from caloforge.cli.main import app

app()
