from fetal_detect.cli import main

raise SystemExit(main())
