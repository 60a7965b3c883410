from qsp.cli import main
import sys
sys.exit(main())
