"""Quoting for the SQL that Millet generates from its declarations (contracts, paths)."""


def ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"
