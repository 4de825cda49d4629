""":class:`AgentConfigForm`: a :class:`ModelForm` with a live preview of the instructions."""

from __future__ import annotations

import html
from typing import Any

import ipywidgets as widgets

from .._errors import TemplateError
from .._fields import json_key
from .._models import AgentConfig
from .._repository import Repository
from ._form import ModelForm
from ._util import message


class AgentConfigForm(ModelForm[AgentConfig]):
    """Edit an :class:`AgentConfig`; ``form.preview`` shows the rendered instructions live.

    The preview is redrawn on every change of any input, and shows a template error (an
    unknown placeholder, for example) in place of the text; such a config is not saved.
    """

    def __init__(
        self, repository: Repository[AgentConfig], entity: AgentConfig | None = None
    ) -> None:
        self.preview = widgets.HTML()
        super().__init__(repository, entity)
        for field in self.inputs.values():
            field.widget.observe(self._refresh_preview, names="value")
        self._refresh_preview()

    def validate(self) -> AgentConfig | None:
        """The config the inputs describe, or None after showing each problem beside its field.

        A template that does not render is a problem too: an ``AgentFactory`` would refuse it.
        """
        config = super().validate()
        if config is None:
            return None
        try:
            config.render_instructions()
        except TemplateError as exc:
            self._show_errors({"instruction_template": str(exc)})
            return None
        return config

    def _extra_widgets(self) -> list[widgets.Widget]:
        return [widgets.HTML("<b>Rendered instructions</b>"), self.preview]

    def _refresh_preview(self, _change: Any = None) -> None:
        values, problems = self.raw_values()
        by_name: dict[str, Any] = {}
        for name, info in AgentConfig.model_fields.items():
            key = json_key(name, info)
            if key not in problems:
                by_name[name] = values.get(key)
        if not isinstance(by_name.get("llm_config"), dict):
            by_name["llm_config"] = {}
        draft = AgentConfig.model_construct(**by_name)
        try:
            text = draft.render_instructions()
        except TemplateError as exc:
            self.preview.value = message("error", str(exc))
            return
        self.preview.value = (
            '<pre style="white-space:pre-wrap;margin:0">' + html.escape(text) + "</pre>"
        )
