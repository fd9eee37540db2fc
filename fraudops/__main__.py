from fraudops.cli import main

main()
