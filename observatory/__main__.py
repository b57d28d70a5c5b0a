from observatory.cli import app

app()
