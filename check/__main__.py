from check.cli import main

main()
