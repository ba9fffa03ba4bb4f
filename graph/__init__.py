"""The engine: node schemas, registry, workflow parsing, validation, planning, caching, execution.

Torch-free by design (a test imports it with torch blocked): fast to import, testable in
milliseconds and reusable by the server and the command line.
"""

from .cache import NoCache, RamBudgetCache, RecentRunsCache, make_cache
from .errors import Interrupted, Issue, RequestError, SchemaError
from .events import (
    NodeFailed,
    NodeFinished,
    NodesCached,
    NodeStarted,
    Progress,
    RunFinished,
    RunInterrupted,
    RunStarted,
)
from .executor import Executor, RunOutcome, RunRequest
from .limits import Limits
from .node import Folders, InterruptToken, Node, NodeContext, NodeResult
from .registry import NodeDef, NodeRegistry
from .schema import (
    BooleanInput,
    ComboInput,
    FloatInput,
    HiddenInput,
    InputSpec,
    IntInput,
    NodeSchema,
    OutputSpec,
    StringInput,
)
from .validate import ValidationResult, validate_workflow
from .workflow import Link, NodeInstance, PromptRequest, Workflow, parse_api_workflow

__all__ = [
    "BooleanInput", "ComboInput", "Executor", "FloatInput", "Folders", "HiddenInput", "InputSpec", "IntInput",
    "Interrupted", "InterruptToken", "Issue", "Limits", "Link", "NoCache", "Node", "NodeContext", "NodeDef",
    "NodeFailed", "NodeFinished", "NodeInstance", "NodeRegistry", "NodeResult", "NodeSchema", "NodeStarted",
    "NodesCached", "OutputSpec", "Progress", "PromptRequest", "RamBudgetCache", "RecentRunsCache", "RequestError",
    "RunFinished", "RunInterrupted", "RunOutcome", "RunRequest", "RunStarted", "SchemaError", "StringInput",
    "ValidationResult", "Workflow", "make_cache", "parse_api_workflow", "validate_workflow",
]
