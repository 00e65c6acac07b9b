"""Every table, imported in one place so migrations and tests see the whole schema."""

from mailroom.campaigns import models as campaigns
from mailroom.crm import models as crm
from mailroom.domains import models as domains
from mailroom.files import models as files
from mailroom.orm import Base
from mailroom.sending import models as sending
from mailroom.tracking import models as tracking
from mailroom.web import models as web

metadata = Base.metadata

__all__ = ["campaigns", "crm", "domains", "files", "metadata", "sending", "tracking", "web"]
