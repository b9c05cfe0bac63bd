from tests.bench.harness import main

raise SystemExit(main())
