"""`make demo`: the seed's scenario on the local platform; `python -m wml_localplatform.demo --help` for its commands.

The modules, in the order `up` uses them: state (the demo's folder, PID files, what runs), prereqs (missing
tools, a taken port), samples (deploy/samples with local values), start (platform, WML service, operator),
topics (tweets in, scored records out), kubectl (commands and the live watch), scenario (score, stop, start
again), show (tables, status, how to look around), commands (up, down, send, scores), cli (arguments, exit codes).
"""

from wml_localplatform.demo.cli import main
from wml_localplatform.demo.errors import DemoError, PortTaken
from wml_localplatform.demo.prereqs import check_port_free, check_prerequisites
from wml_localplatform.demo.samples import SAMPLE, SAMPLE_SECRETS, sample_resource, sample_secrets
from wml_localplatform.demo.scenario import pick_tweets
from wml_localplatform.demo.show import Summary, summarize
from wml_localplatform.demo.state import DemoState, Layout
from wml_localplatform.demo.topics import record

__all__ = [
    "SAMPLE", "SAMPLE_SECRETS", "DemoError", "DemoState", "Layout", "PortTaken", "Summary", "check_port_free",
    "check_prerequisites", "main", "pick_tweets", "record", "sample_resource", "sample_secrets", "summarize",
]
