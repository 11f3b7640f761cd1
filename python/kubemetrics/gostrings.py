"""Go's string quoting, for the messages and log lines that must read like upstream's."""


def go_quote(text: str) -> str:
    """`text` as Go's strconv.Quote / `%q` prints it (the ASCII cases that occur in names,
    paths, users and log messages)."""
    out = ['"']
    for ch in text:
        if ch == '"':
            out.append('\\"')
        elif ch == "\\":
            out.append("\\\\")
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\t":
            out.append("\\t")
        elif ch == "\r":
            out.append("\\r")
        elif ch < " " or ch == "\x7f":
            out.append(f"\\x{ord(ch):02x}")
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)
