from mammut_video.commands import main

raise SystemExit(main())
