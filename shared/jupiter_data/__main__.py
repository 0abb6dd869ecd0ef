from jupiter_data.cli import main

raise SystemExit(main())
