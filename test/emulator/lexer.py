"""The HogQL tokenizer: query text -> tokens (Tok), with quoted names, strings and {placeholders} unescaped."""

import re

from errors import HogQLSyntaxError


_TOKEN_RE = re.compile(r"""
 (?P<ws>\s+|--[^\n]*|/\*.*?\*/)
|(?P<num>(?:\d+\.\d*|\.\d+|\d+)(?:[eE][+-]?\d+)?(?![A-Za-z_$0-9]))
|(?P<str>'(?:[^'\\]|\\.|'')*')
|(?P<bq>`(?:[^`\\]|\\.|``)*`)
|(?P<dq>"(?:[^"\\]|\\.|"")*")
|(?P<ph>\{\s*[A-Za-z_][A-Za-z0-9_]*\s*\})
|(?P<id>[A-Za-z_$][A-Za-z0-9_$]*)
|(?P<op>==|!=|<>|<=|>=|\|\||::|->|[=<>(),.*+\-/%\[\]:?{};])
""", re.S | re.X)

_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "0": "\0", "b": "\b", "f": "\f", "a": "\a", "v": "\v",
            "\\": "\\", "'": "'", '"': '"', "`": "`"}


def unescape_quoted(body, quote):
    out = []
    i = 0
    n = len(body)
    while i < n:
        c = body[i]
        if c == "\\" and i + 1 < n:
            e = body[i + 1]
            if e == "x" and i + 3 < n + 0 and re.match(r"[0-9A-Fa-f]{2}", body[i + 2:i + 4]):
                out.append(chr(int(body[i + 2:i + 4], 16)))
                i += 4
                continue
            out.append(_ESCAPES.get(e, e))
            i += 2
            continue
        if c == quote and i + 1 < n and body[i + 1] == quote:
            out.append(quote)
            i += 2
            continue
        out.append(c)
        i += 1
    return "".join(out)


class Tok:
    __slots__ = ("kind", "value", "pos", "upper")

    def __init__(self, kind, value, pos):
        self.kind = kind      # 'num' 'str' 'id' 'qid' 'ph' 'op' 'eof'
        self.value = value
        self.pos = pos
        self.upper = value.upper() if kind == "id" else None

    def __repr__(self):
        return "%s %r" % (self.kind, self.value)


def tokenize(text):
    toks = []
    pos = 0
    n = len(text)
    while pos < n:
        m = _TOKEN_RE.match(text, pos)
        if not m:
            c = text[pos]
            if c in "'`\"":
                raise HogQLSyntaxError("Syntax error at position %d: unterminated quoted text" % pos)
            raise HogQLSyntaxError("Syntax error at position %d: unexpected character %r" % (pos, c))
        kind = m.lastgroup
        v = m.group()
        if kind == "ws":
            pass
        elif kind == "str":
            toks.append(Tok("str", unescape_quoted(v[1:-1], "'"), pos))
        elif kind in ("bq", "dq"):
            toks.append(Tok("qid", unescape_quoted(v[1:-1], v[0]), pos))
        elif kind == "ph":
            toks.append(Tok("ph", v[1:-1].strip(), pos))
        else:
            toks.append(Tok(kind, v, pos))
        pos = m.end()
    toks.append(Tok("eof", "", n))
    return toks
