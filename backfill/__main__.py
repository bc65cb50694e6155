from backfill.entry import main

main()
