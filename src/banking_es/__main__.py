from banking_es.cli import main

main()
