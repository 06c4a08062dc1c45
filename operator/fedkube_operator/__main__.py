from fedkube_operator.main import main

raise SystemExit(main())
