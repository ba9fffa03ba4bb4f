"""The same pack speaking ComfyUI's V3 protocol: `io.ComfyNode` classes registered by `comfy_entrypoint()`.

Sumie adapts V3 nodes onto its own schema (plugins/comfy_v3.py), so they validate, cache and fail like
built-in nodes. Use this form for a pack that must also run in ComfyUI; `SUMIE_API` nodes are the
native form. docs/plugins.md describes both.
"""

from __future__ import annotations

from comfy_api.latest import ComfyExtension, io, ui


class ExampleWordCount(io.ComfyNode):
    """Widgets, two outputs and a ui text shown on the node."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        return io.Schema(
            node_id="ExampleWordCount", display_name="Word Count (example, V3)", category="examples",
            description="Counts the words of a text.", is_output_node=True,
            inputs=[io.String.Input("text", multiline=True, default="hello world"),
                    io.Int.Input("min_length", default=1, min=1, max=100, tooltip="shorter words are not counted")],
            outputs=[io.Int.Output(display_name="count"), io.String.Output(display_name="report")],
        )

    @classmethod
    def execute(cls, text: str, min_length: int) -> io.NodeOutput:
        count = sum(1 for word in text.split() if len(word) >= min_length)
        report = f"{count} word(s) of {min_length}+ letters"
        return io.NodeOutput(count, report, ui=ui.PreviewText(report))


class ExampleJoinTexts(io.ComfyNode):
    """A growing list of text inputs (Autogrow) and a check of the inputs before the run (validate_inputs)."""

    @classmethod
    def define_schema(cls) -> io.Schema:
        template = io.Autogrow.TemplatePrefix(io.String.Input("text"), prefix="text", min=1, max=8)
        return io.Schema(
            node_id="ExampleJoinTexts", display_name="Join Texts (example, V3)", category="examples",
            inputs=[io.Autogrow.Input("texts", template=template), io.String.Input("separator", default=", ")],
            outputs=[io.String.Output(display_name="text")],
        )

    @classmethod
    def validate_inputs(cls, separator: str) -> bool | str:
        return True if "\n" not in separator else "the separator must be on one line"

    @classmethod
    def execute(cls, texts: dict[str, str], separator: str) -> io.NodeOutput:
        return io.NodeOutput(separator.join(texts[name] for name in sorted(texts, key=lambda n: int(n[4:]))))


class ExampleExtension(ComfyExtension):
    async def get_node_list(self) -> list[type[io.ComfyNode]]:
        return [ExampleWordCount, ExampleJoinTexts]


async def comfy_entrypoint() -> ExampleExtension:
    return ExampleExtension()
