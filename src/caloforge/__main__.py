from caloforge.cli.main import main

main()
