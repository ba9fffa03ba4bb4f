"""Pure-Python nodes: repeat a text, show a text in the editor, a lazy switch, a colour swatch."""

from __future__ import annotations

import re
from typing import Any

from graph import BooleanInput, InputSpec, IntInput, Node, NodeResult, NodeSchema, OutputSpec, StringInput


class ExampleRepeatText(Node):
    """The smallest useful node: typed inputs in, a tuple of outputs out."""

    SCHEMA = NodeSchema(
        node_type="ExampleRepeatText", display_name="Repeat Text (example)", category="examples",
        description="Repeats a text a number of times, joined by a separator.",
        inputs=[StringInput(name="text", default="hello", multiline=True),
                IntInput(name="times", default=2, min=1, max=100, tooltip="how many copies"),
                StringInput(name="separator", default=" ")],
        outputs=[OutputSpec(type="STRING", name="text")],
    )

    def execute(self, ctx, *, text: str, times: int, separator: str) -> tuple[str]:
        return (separator.join([text] * times),)


class ExampleShowText(Node):
    """An output node: what it returns under `ui` is shown on the node and stored in history."""

    SCHEMA = NodeSchema(
        node_type="ExampleShowText", display_name="Show Text (example)", category="examples",
        inputs=[InputSpec(name="text", type="STRING", force_input=True)],
        outputs=[OutputSpec(type="STRING", name="text")], output_node=True,
    )

    def execute(self, ctx, *, text: str) -> NodeResult:
        return NodeResult(result=(text,), ui={"text": [text]})


class ExampleLazySwitch(Node):
    """A lazy input: only the branch the switch selects is computed."""

    SCHEMA = NodeSchema(
        node_type="ExampleLazySwitch", display_name="Lazy Switch (example)", category="examples",
        inputs=[BooleanInput(name="use_first", default=True),
                InputSpec(name="first", type="*", lazy=True, optional=True),
                InputSpec(name="second", type="*", lazy=True, optional=True)],
        outputs=[OutputSpec(type="*", name="value")],
    )

    def check_lazy_status(self, *, use_first: bool, first: Any = None, second: Any = None) -> list[str]:
        """Names of the lazy inputs still needed (None means "not computed yet")."""
        wanted = "first" if use_first else "second"
        return [wanted] if (first if use_first else second) is None else []

    def execute(self, ctx, *, use_first: bool, first: Any = None, second: Any = None) -> tuple[Any]:
        return (first if use_first else second,)


_HEX = re.compile(r"#?([0-9a-fA-F]{6})")


class ExampleColorSwatch(Node):
    """Checks a colour at validation time and shows it; web/swatch.js paints the node in that colour."""

    SCHEMA = NodeSchema(
        node_type="ExampleColorSwatch", display_name="Colour Swatch (example)", category="examples",
        inputs=[StringInput(name="color", default="#3366ff", tooltip="a hex colour such as #3366ff")],
        outputs=[OutputSpec(type="STRING", name="color")], output_node=True,
    )

    def validate_inputs(self, *, limits: Any = None, color: str = "#3366ff", **_: Any) -> bool | str:
        return True if _HEX.fullmatch(color.strip()) else f"{color!r} is not a hex colour like #3366ff"

    def execute(self, ctx, *, color: str) -> NodeResult:
        value = "#" + _HEX.fullmatch(color.strip())[1].lower()
        return NodeResult(result=(value,), ui={"color": [value], "text": [value]})
