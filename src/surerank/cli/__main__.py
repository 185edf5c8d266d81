from surerank.cli import main

raise SystemExit(main())
