from mammut_video.cli import main

raise SystemExit(main())
