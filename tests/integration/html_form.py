"""A page's form as a browser submits it, read from the page's HTML: what a test posts to use the real form
(every field it renders, hidden ones and the CSRF token included) rather than data written by hand."""

from __future__ import annotations

from dataclasses import dataclass, field
from html.parser import HTMLParser

_SUBMITS = {"submit", "button", "image", "reset"}


@dataclass
class Form:
    """The fields of a form: each name's values, as a browser would send them unchanged."""

    fields: dict[str, list[str]] = field(default_factory=dict)
    options: dict[str, dict[str, str]] = field(default_factory=dict)  # a select's options: label -> value
    submits: list[str] = field(default_factory=list)  # the names of its submit buttons

    def data(self) -> dict[str, list[str]]:
        """A copy of the fields, to change and post."""
        return {name: list(values) for name, values in self.fields.items()}

    def selected(self, name: str) -> str:
        """The label of select ``name``'s chosen option."""
        labels = {value: label for label, value in self.options[name].items()}
        return labels[self.fields[name][0]]


class _Reader(HTMLParser):
    def __init__(self, form_id: str) -> None:
        super().__init__(convert_charrefs=True)
        self.form_id = form_id
        self.form: Form | None = None
        self.inside = False
        self._select: tuple[str, bool, list[tuple[str, str, bool]]] | None = None  # name, multiple, options
        self._option: tuple[str | None, bool, list[str]] | None = None  # value, selected, text
        self._textarea: tuple[str, list[str]] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {key: value or "" for key, value in attrs}
        if tag == "form" and a.get("id") == self.form_id:
            self.form, self.inside = Form(), True
            return
        if not self.inside or self.form is None or "disabled" in a:
            return
        name = a.get("name", "")
        if tag == "input" and name:
            kind = a.get("type", "text").lower()
            if kind in _SUBMITS:
                self.form.submits.append(name)
            elif kind in ("checkbox", "radio"):
                if "checked" in a:
                    self.form.fields.setdefault(name, []).append(a.get("value") or "on")
            elif kind != "file":
                self.form.fields.setdefault(name, []).append(a.get("value", ""))
        elif tag == "button" and name and a.get("type", "submit").lower() == "submit":
            self.form.submits.append(name)
        elif tag == "select" and name:
            self._select = (name, "multiple" in a, [])
        elif tag == "option" and self._select is not None:
            self._option = (dict(attrs).get("value"), "selected" in a, [])
        elif tag == "textarea" and name:
            self._textarea = (name, [])

    def handle_data(self, data: str) -> None:
        if self._option is not None:
            self._option[2].append(data)
        elif self._textarea is not None:
            self._textarea[1].append(data)

    def handle_endtag(self, tag: str) -> None:
        if tag == "form" and self.inside:
            self.inside = False
        elif tag == "option" and self._option is not None and self._select is not None:
            value, chosen, text = self._option
            label = "".join(text).strip()
            self._select[2].append((label, label if value is None else value, chosen))
            self._option = None
        elif tag == "select" and self._select is not None and self.form is not None:
            name, multiple, options = self._select
            self.form.options[name] = {label: value for label, value, _ in options}
            chosen = [value for _, value, picked in options if picked]
            if not chosen and not multiple and options:
                chosen = [options[0][1]]  # a browser sends a single select's first option when none is marked
            self.form.fields.setdefault(name, []).extend(chosen if multiple else chosen[-1:])
            self._select = None
        elif tag == "textarea" and self._textarea is not None and self.form is not None:
            name, text = self._textarea
            value = "".join(text)
            self.form.fields.setdefault(name, []).append(value[1:] if value.startswith("\n") else value)
            self._textarea = None  # (HTML drops the newline that follows <textarea>)


def read_form(html: str, form_id: str) -> Form:
    """The form ``form_id`` of ``html``, as a browser would submit it untouched.

    Raises:
        AssertionError: the page has no such form (its HTML is in the message).
    """
    reader = _Reader(form_id)
    reader.feed(html)
    reader.close()
    if reader.form is None:
        raise AssertionError(f"no form {form_id!r} in the page:\n{html}")
    return reader.form
