"""Reduce a WSDL to one operation and the schema components it reaches.

Workday's Staffing WSDL is one document of about 2.6 MB with one inline
schema of over a thousand types, and zeep spends most of a client build
turning that schema into Python types. The connector calls one operation,
so it keeps a reduced copy on disk. The copy contains the binding, port
type and messages of that operation (input, output and faults), the
service ports of the binding, and the schema components that the
messages' parts reach.
zeep builds the same envelopes from the copy in a fraction of the time.

Only self-contained documents are reduced. A WSDL that imports other
documents, or a schema that uses ``substitutionGroup`` or ``redefine``
(where reachability is not a matter of names alone), raises ``PruneError``,
and the caller builds from the full document as before.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

__all__ = ["PruneError", "prune_wsdl"]

WSDL_NS = "http://schemas.xmlsoap.org/wsdl/"
XSD_NS = "http://www.w3.org/2001/XMLSchema"

# Top-level schema components, by the kind of name they declare.
_COMPONENT_KINDS = {
    f"{{{XSD_NS}}}element": "element",
    f"{{{XSD_NS}}}attribute": "attribute",
    f"{{{XSD_NS}}}complexType": "type",
    f"{{{XSD_NS}}}simpleType": "type",
    f"{{{XSD_NS}}}group": "group",
    f"{{{XSD_NS}}}attributeGroup": "attributeGroup",
}

# Kind of component that a ``ref`` attribute names, by the element carrying it.
_REF_KINDS = {
    f"{{{XSD_NS}}}element": "element",
    f"{{{XSD_NS}}}attribute": "attribute",
    f"{{{XSD_NS}}}group": "group",
    f"{{{XSD_NS}}}attributeGroup": "attributeGroup",
}

_UNSUPPORTED = (
    f"{{{WSDL_NS}}}import",
    f"{{{XSD_NS}}}import",
    f"{{{XSD_NS}}}include",
    f"{{{XSD_NS}}}redefine",
)

Key = tuple[str, str, str]


class PruneError(ValueError):
    """The document cannot be reduced safely; build from the full WSDL."""


def _qname(node: Any, value: str) -> tuple[str, str]:
    prefix, _, local = value.strip().rpartition(":")
    namespace = node.nsmap.get(prefix or None)
    if namespace is None:
        if prefix:
            raise PruneError(f"The prefix {prefix!r} of {value!r} is not declared.")
        namespace = ""
    return namespace, local


def _parse(document: bytes) -> Any:
    from lxml import etree  # type: ignore[import-untyped]

    parser = etree.XMLParser(
        resolve_entities=False, no_network=True, load_dtd=False, huge_tree=False
    )
    root = etree.fromstring(document, parser)
    if root.getroottree().docinfo.doctype:
        raise PruneError("The WSDL declares a DTD.")
    if root.tag != f"{{{WSDL_NS}}}definitions":
        raise PruneError("The document is not a WSDL 1.1 definitions element.")
    for tag in _UNSUPPORTED:
        if next(root.iter(tag), None) is not None:
            raise PruneError(f"The WSDL uses {tag.rpartition('}')[2]}.")
    if any(node.get("substitutionGroup") for node in root.iter(f"{{{XSD_NS}}}element")):
        raise PruneError("The schema uses substitutionGroup.")
    return root


def _named(root: Any, tag: str, namespace: str, name: str) -> Any:
    if namespace != root.get("targetNamespace", ""):
        raise PruneError(f"{{{namespace}}}{name} is not defined in this WSDL.")
    for node in root.iterchildren(f"{{{WSDL_NS}}}{tag}"):
        if node.get("name") == name:
            return node
    raise PruneError(f"The WSDL has no {tag} named {name!r}.")


def _keep_only(parent: Any, tag: str, keep: list[Any]) -> None:
    for node in list(parent.iterchildren(f"{{{WSDL_NS}}}{tag}")):
        if not any(node is kept for kept in keep):
            parent.remove(node)


def _keep_operation(parent: Any, operation: str) -> Any:
    """Remove every operation of ``parent`` but ``operation`` and return that one."""
    for node in parent.iterchildren(f"{{{WSDL_NS}}}operation"):
        if node.get("name") == operation:
            _keep_only(parent, "operation", [node])
            return node
    kind = parent.tag.rpartition("}")[2]
    name = parent.get("name")
    raise PruneError(f"The {kind} {name!r} has no operation {operation!r}.")


def _references(component: Any) -> Iterator[Key]:
    """Yield the named components that ``component`` refers to."""
    for node in component.iter(f"{{{XSD_NS}}}*"):
        for attribute in ("type", "base", "itemType"):
            value = node.get(attribute)
            if value:
                yield ("type", *_qname(node, value))
        for value in (node.get("memberTypes") or "").split():
            yield ("type", *_qname(node, value))
        ref = node.get("ref")
        if ref and node.tag in _REF_KINDS:
            yield (_REF_KINDS[node.tag], *_qname(node, ref))


def prune_wsdl(document: bytes, binding: str, operation: str) -> bytes:
    """Return ``document`` reduced to ``operation`` of ``binding``.

    ``binding`` is a Clark name (``{namespace}name``). Raises ``PruneError``
    when the document cannot be reduced safely.
    """
    from lxml import etree

    root = _parse(document)
    namespace, _, local = binding[1:].partition("}")
    binding_node = _named(root, "binding", namespace, local)
    _keep_operation(binding_node, operation)
    port_type_name = _qname(binding_node, binding_node.get("type", ""))
    port_type = _named(root, "portType", *port_type_name)
    port_operation = _keep_operation(port_type, operation)

    messages = []
    for node in port_operation:
        if node.get("message"):
            messages.append(_named(root, "message", *_qname(node, node.get("message"))))
    _keep_only(root, "message", messages)
    _keep_only(root, "portType", [port_type])
    _keep_only(root, "binding", [binding_node])
    for service in list(root.iterchildren(f"{{{WSDL_NS}}}service")):
        for port in list(service.iterchildren(f"{{{WSDL_NS}}}port")):
            if _qname(port, port.get("binding", "")) != (namespace, local):
                service.remove(port)
        if not len(service.findall(f"{{{WSDL_NS}}}port")):
            root.remove(service)

    pending: list[Key] = []
    for message in messages:
        for part in message.iterchildren(f"{{{WSDL_NS}}}part"):
            if part.get("element"):
                pending.append(("element", *_qname(part, part.get("element"))))
            elif part.get("type"):
                pending.append(("type", *_qname(part, part.get("type"))))
    _prune_schemas(root, pending)
    return bytes(etree.tostring(root, xml_declaration=True, encoding="UTF-8"))


def _prune_schemas(root: Any, pending: list[Key]) -> None:
    schemas = list(root.iter(f"{{{XSD_NS}}}schema"))
    index: dict[Key, Any] = {}
    for schema in schemas:
        target = schema.get("targetNamespace", "")
        for node in schema.iterchildren():
            kind = _COMPONENT_KINDS.get(node.tag)
            if kind is not None and node.get("name"):
                index[(kind, target, node.get("name"))] = node
    reached: set[Key] = set()
    while pending:
        key = pending.pop()
        if key in reached or key[1] == XSD_NS:
            continue
        component = index.get(key)
        if component is None:
            raise PruneError(f"The schema does not define the {key[0]} {key[2]!r}.")
        reached.add(key)
        pending.extend(_references(component))
    reached_nodes = {id(index[key]) for key in reached}
    for schema in schemas:
        for node in list(schema.iterchildren()):
            component = not isinstance(node.tag, str) or node.tag in _COMPONENT_KINDS
            if component and id(node) not in reached_nodes:
                schema.remove(node)
