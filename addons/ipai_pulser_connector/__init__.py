from . import handlers
from . import worker
from . import models
from . import controllers
from . import wizard
