from mlkube.cli import main

raise SystemExit(main())
