from legibility.cli import main

main()
