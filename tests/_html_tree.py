"""HTML read back with html.parser into a small tree, for tests of the report and the
notebook view (no browser needed)."""

from __future__ import annotations

import re
from html.parser import HTMLParser

VOID = {"meta", "br", "img", "link", "input", "hr", "source", "wbr", "area", "base", "col"}


class Node:
    def __init__(self, tag, attrs, parent=None):
        self.tag, self.attrs, self.parent = tag, dict(attrs), parent
        self.children: list[Node] = []
        self.text_parts: list[str] = []

    @property
    def classes(self):
        return (self.attrs.get("class") or "").split()

    def text(self):
        return "".join(self.text_parts) + "".join(c.text() for c in self.children)

    def iter(self):
        yield self
        for child in self.children:
            yield from child.iter()

    def find_all(self, tag=None, cls=None):
        return [
            n
            for n in self.iter()
            if (tag is None or n.tag == tag) and (cls is None or cls in n.classes)
        ]

    def child(self, tag=None, cls=None):
        found = [
            c
            for c in self.children
            if (tag is None or c.tag == tag) and (cls is None or cls in c.classes)
        ]
        assert len(found) == 1, (tag, cls, len(found))
        return found[0]


class TreeBuilder(HTMLParser):
    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.root = Node("#root", [])
        self.current = self.root
        self.styles: list[str] = []

    def handle_starttag(self, tag, attrs):
        node = Node(tag, attrs, self.current)
        self.current.children.append(node)
        if tag not in VOID:
            self.current = node

    def handle_endtag(self, tag):
        assert self.current.tag == tag, f"</{tag}> closes <{self.current.tag}>"
        self.current = self.current.parent

    def handle_data(self, data):
        self.current.text_parts.append(data)
        if self.current.tag == "style":
            self.styles.append(data)


def parse(text: str) -> TreeBuilder:
    builder = TreeBuilder()
    builder.feed(text)
    builder.close()
    assert builder.current is builder.root, "unclosed elements"
    return builder


def assert_self_contained(tree: TreeBuilder) -> None:
    """Nothing is fetched at view time: no remote src/href, no script files, no CSS links."""
    for node in tree.root.iter():
        for name in ("src", "href", "srcset", "data", "action", "poster"):
            value = (node.attrs.get(name) or "").strip().lower()
            assert not value.startswith(("http://", "https://", "//")), (node.tag, value)
        assert not (node.tag == "script" and "src" in node.attrs)
        assert node.tag not in ("link", "iframe", "object", "embed", "img")
    css = "".join(tree.styles).lower()
    assert "@import" not in css and "url(" not in css


def css_selectors(css: str) -> list[str]:
    """Every selector of a stylesheet without at-rules: ``a, b{...}`` gives ``a`` and ``b``."""
    selectors = []
    for block in re.findall(r"([^{}]+)\{[^{}]*\}", css):
        selectors += [s.strip() for s in block.split(",") if s.strip()]
    return selectors


def patient_sections(tree: TreeBuilder) -> dict[str, Node]:
    return {
        s.attrs["id"][len("p-") :]: s
        for s in tree.root.find_all("section", "patient")
        if s.attrs.get("id", "").startswith("p-")
    }


def chip_code(chip: Node) -> str:
    """The code printed on a chip (its description, if any, is printed under it)."""
    return chip.child("span", "cname").text()
