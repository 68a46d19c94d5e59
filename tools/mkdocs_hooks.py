"""MkDocs hook: the options table of removing.md, generated from RemoveOptions' metadata when the
site is built (so it can never disagree with the code)."""

MARKER = "<!-- cleancut:options-table -->"


def on_page_markdown(markdown, page, config, files):
    if MARKER not in markdown:
        return markdown
    from cleancut.options import options_markdown

    return markdown.replace(MARKER, options_markdown())
