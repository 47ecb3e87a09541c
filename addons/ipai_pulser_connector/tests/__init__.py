from . import test_state_machine
from . import test_handlers
from . import test_worker
from . import test_envelope
from . import test_api
from . import test_concurrency
from . import test_telemetry
from . import test_report
