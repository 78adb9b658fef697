"""A parsed HTML page for the dashboard tests: the element tree from the stdlib's
html.parser, with lookups by tag, id, class and attribute, and a strictness check (every
non-void element closed, in order), so a test reads the page as a browser would."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from html.parser import HTMLParser

VOID = frozenset(
    {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source",
     "track", "wbr"}
)  # fmt: skip


@dataclass(eq=False)
class Element:
    tag: str
    attrs: dict[str, str]
    children: list[Element | str] = field(default_factory=list)
    parent: Element | None = None

    @property
    def classes(self) -> set[str]:
        return set(self.attrs.get("class", "").split())

    @property
    def id(self) -> str | None:
        return self.attrs.get("id")

    def text(self) -> str:
        """The text inside, as a browser shows it (whitespace kept)."""
        return "".join(c if isinstance(c, str) else c.text() for c in self.children)

    def iter(self) -> Iterator[Element]:
        for child in self.children:
            if isinstance(child, Element):
                yield child
                yield from child.iter()

    def find_all(
        self, tag: str | None = None, *, cls: str | None = None, **attrs: str | bool
    ) -> list[Element]:
        """Descendants with *tag*, class *cls* and the attributes *attrs* (``data_run`` is
        ``data-run``; the value ``True`` means present)."""
        wanted = {k.replace("_", "-"): v for k, v in attrs.items()}
        out = []
        for el in self.iter():
            if tag is not None and el.tag != tag:
                continue
            if cls is not None and cls not in el.classes:
                continue
            if all(
                (k in el.attrs) if v is True else el.attrs.get(k) == v for k, v in wanted.items()
            ):
                out.append(el)
        return out

    def find(
        self, tag: str | None = None, *, cls: str | None = None, **attrs: str | bool
    ) -> Element:
        """The first match; fails the test when there is none."""
        found = self.find_all(tag, cls=cls, **attrs)
        assert found, f"no <{tag or '*'}> with class={cls} {attrs}"
        return found[0]

    def by_id(self, ident: str) -> Element:
        found = [el for el in self.iter() if el.id == ident]
        assert len(found) == 1, f"{len(found)} elements with id={ident!r}"
        return found[0]

    def state(self) -> str:
        """The state an element shows by its ``st-*`` class (exactly one)."""
        states = [c[3:] for c in self.classes if c.startswith("st-")]
        assert len(states) == 1, f"<{self.tag} class={self.attrs.get('class')!r}>"
        return states[0]


class _Builder(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.root = Element("#document", {})
        self.stack = [self.root]
        self.problems: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        el = Element(tag, {k: v if v is not None else "" for k, v in attrs}, parent=self.stack[-1])
        self.stack[-1].children.append(el)
        if tag not in VOID:
            self.stack.append(el)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        el = Element(tag, {k: v if v is not None else "" for k, v in attrs}, parent=self.stack[-1])
        self.stack[-1].children.append(el)

    def handle_endtag(self, tag: str) -> None:
        if tag in VOID:
            return
        if self.stack[-1].tag != tag:
            self.problems.append(f"</{tag}> closes <{self.stack[-1].tag}>")
            while len(self.stack) > 1 and self.stack[-1].tag != tag:
                self.stack.pop()
        if len(self.stack) > 1:
            self.stack.pop()

    def handle_data(self, data: str) -> None:
        self.stack[-1].children.append(data)


def parse(html: str) -> Element:
    """The document's tree; fails on mismatched or unclosed elements."""
    builder = _Builder()
    builder.feed(html)
    builder.close()
    assert not builder.problems, builder.problems[:5]
    assert len(builder.stack) == 1, f"unclosed: {[el.tag for el in builder.stack[1:]]}"
    return builder.root
