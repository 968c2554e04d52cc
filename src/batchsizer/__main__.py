from batchsizer.cli import main

main()
