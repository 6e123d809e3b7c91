from evstream.cli import main

main()
