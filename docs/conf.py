"""Sphinx configuration for the captum_robust documentation site.

Build it with ``make docs`` (which also runs the browser check), or by hand with
``.venv/bin/sphinx-build -W --keep-going -b html docs docs/_build/html``.

Two parts of the site are written by this file at build time, so that they never
need editing by hand:

* ``api/generated/``: one page per public module of ``captum_robust`` (the package
  itself and each subpackage) whose ``__all__`` is non-empty, with an autosummary
  table that gives every public name its own page. A new name appears in the
  reference as soon as it is added to its subpackage's ``__all__``.
* the toctree of the tutorials page: every notebook in ``tutorials/`` (``*.ipynb``
  or MyST markdown notebooks ``*.md``, ``README.md`` excepted), in file-name order.

See docs/README.md for how to add a page, a tutorial or an API entry.
"""

from __future__ import annotations

import html
import importlib
import json
import os
import pkgutil
import re
import shutil
import sys
from pathlib import Path

DOCS_DIR = Path(__file__).resolve().parent
REPO_ROOT = DOCS_DIR.parent
# The package is installed in editable mode by `make docs`; this makes a plain
# sphinx-build from a checkout work too.
sys.path.insert(0, str(REPO_ROOT))

import captum_robust  # noqa: E402

# -- Project information ------------------------------------------------------

project = "captum_robust"
author = "captum_robust developers"
copyright = "captum_robust developers"
release = captum_robust.__version__
version = ".".join(release.split(".")[:2])

# -- General configuration ----------------------------------------------------

extensions = [
    "myst_nb",  # Markdown (MyST) pages and notebooks; includes myst_parser
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.napoleon",
    "sphinx.ext.viewcode",
]

root_doc = "index"
templates_path = ["_templates"]
exclude_patterns = [
    "_build",
    "node_modules",  # MathJax (npm ci), copied into _static by the code below
    "README.md",  # docs/README.md: notes for maintainers, not a page
    "tutorials/README.md",  # tutorials/README.md: notes for tutorial authors
    "**.ipynb_checkpoints",
    "Thumbs.db",
    ".DS_Store",
]
# No intersphinx: the build must not reach the network.

# -- Autodoc, autosummary, napoleon -------------------------------------------

autosummary_imported_members = True
autosummary_ignore_module_all = False
autodoc_member_order = "bysource"
autodoc_typehints = "signature"
autodoc_preserve_defaults = True
add_module_names = False

napoleon_google_docstring = False
napoleon_numpy_docstring = True
# Attributes sections become :ivar: fields, so they never clash with the
# attribute entries that autoclass :members: writes (duplicate-object warnings).
napoleon_use_ivar = True
napoleon_use_rtype = False

# -- MyST and notebook execution ----------------------------------------------

# dollarmath: the $...$ formulas of the metrics reference render with MathJax.
myst_enable_extensions = ["colon_fence", "deflist", "dollarmath"]
myst_heading_anchors = 3

# Every notebook (tutorials and the quick start) is executed at build time, so
# the site only shows code that runs against the library as it is now.
# CAPTUM_ROBUST_DOCS_EXECUTE=cache reuses outputs of unchanged notebooks while
# writing docs locally; "off" skips execution (outputs then stay empty).
nb_execution_mode = os.environ.get("CAPTUM_ROBUST_DOCS_EXECUTE", "force")
nb_execution_cache_path = str(DOCS_DIR / "_build" / ".jupyter_cache")
nb_execution_timeout = int(os.environ.get("CAPTUM_ROBUST_DOCS_CELL_TIMEOUT", "600"))
# A failing cell is a warning, which -W turns into a failed build at the end;
# unlike raise_on_error, this prints the cell's traceback in the build log.
nb_execution_raise_on_error = False
nb_execution_show_tb = True
nb_execution_allow_errors = False
# Run in a temporary folder: outputs a tutorial writes never land in the tree.
nb_execution_in_temp = True
nb_kernel_rgx_aliases = {".*": "python3"}
nb_merge_streams = True
# Library warnings printed to stderr (tqdm's "IProgress not found", Captum's
# UserWarnings) are noise on a rendered page; print to stdout what must show.
# CAPTUM_ROBUST_DOCS_STDERR=warn lists what would be hidden (and fails -W).
nb_output_stderr = os.environ.get("CAPTUM_ROBUST_DOCS_STDERR", "remove")
# Notices of the Jupyter machinery itself, printed by every kernel start into the
# build log: debugpy's frozen-modules warning and jupyter_core's notice that its
# paths are migrating (the new paths are what it asks for). The kernels inherit
# these variables.
os.environ.setdefault("PYDEVD_DISABLE_FILE_VALIDATION", "1")
os.environ.setdefault("JUPYTER_PLATFORM_DIRS", "1")
# The kernels also get an IPython profile of their own: the build ignores the
# builder's startup files, and ipykernel's start-up notice about its loopback
# TCP transport stays out of the log (kernel errors are still shown).
_IPYTHON_DIR = DOCS_DIR / "_build" / "ipython"
(_IPYTHON_DIR / "profile_default").mkdir(parents=True, exist_ok=True)
(_IPYTHON_DIR / "profile_default" / "ipython_kernel_config.py").write_text(
    'c.IPKernelApp.log_level = "ERROR"\n', encoding="utf-8"
)
os.environ["IPYTHONDIR"] = str(_IPYTHON_DIR)

# -- HTML output --------------------------------------------------------------

html_theme = "pydata_sphinx_theme"
html_title = f"captum_robust {release}"
html_static_path = ["_static"]
html_css_files = ["custom.css"]
html_show_sourcelink = False
html_last_updated_fmt = None
html_theme_options = {
    "logo": {"text": "captum_robust"},
    "navbar_align": "left",
    "header_links_before_dropdown": 7,
    "show_toc_level": 2,
    "navigation_with_keys": False,
    "show_prev_next": True,
    "secondary_sidebar_items": ["page-toc"],
    "article_header_end": ["download-notebook"],
    "footer_start": ["copyright"],
    "footer_end": ["sphinx-version"],
}
# Pages without sub-pages get no (empty) section navigation on the left.
html_sidebars = {
    "index": [],
    "installation": [],
    "quickstart": [],
    "concepts": [],
    "changelog": [],
    # Tutorials: the list of tutorials is on their index page, and the room
    # goes to code and output (88-character lines fit at 1280 px).
    "tutorials/*": [],
}

# -- MathJax, served from the site itself --------------------------------------
# Docstrings use :math:. Sphinx would load MathJax from a CDN, which an offline
# reader (or the browser check) cannot reach. MathJax's own distribution, the
# `mathjax` npm package pinned in docs/package.json, is installed by `make docs`
# (`npm ci` in docs/); the parts that render TeX to HTML are copied into the
# site. Without it the build stops here rather than fall back to the CDN.

MATHJAX_ES5 = DOCS_DIR / "node_modules" / "mathjax" / "es5"
MATHJAX_PARTS = (
    "tex-mml-chtml.js",
    "output/chtml/fonts/woff-v2",
    "input/tex/extensions",
    "ui",
    "a11y",
)


def _local_mathjax() -> str:
    if not (MATHJAX_ES5 / "tex-mml-chtml.js").is_file():
        raise RuntimeError(
            f"MathJax not found in {MATHJAX_ES5}: run `make docs`, or "
            "`npm ci --prefix docs` once, to install the version in docs/package.json"
        )
    target = DOCS_DIR / "_build" / "mathjax_static" / "mathjax"
    shutil.rmtree(target, ignore_errors=True)
    for part in MATHJAX_PARTS:
        source = MATHJAX_ES5 / part
        if source.is_dir():
            shutil.copytree(source, target / part)
        else:
            (target / part).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target / part)
    html_static_path.append(str(target.parent))
    return "mathjax/tex-mml-chtml.js"  # relative to _static/


mathjax_path = _local_mathjax()

# -- Generated API pages ------------------------------------------------------

API_DIR = DOCS_DIR / "api"
GENERATED_DIR = API_DIR / "generated"
# Subpackages come in this order; any other public module follows, by name.
PREFERRED_ORDER = [
    "captum_robust",
    "captum_robust.metrics",
    "captum_robust.attr",
    "captum_robust.attacks",
    "captum_robust.regularizers",
    "captum_robust.evaluation",
    "captum_robust.experiments",
    "captum_robust.datasets",
    "captum_robust.visualization",
]


def public_modules() -> list[str]:
    """The package and its public first-level modules and subpackages.

    A folder without ``__init__.py`` is not a module yet and is skipped. A module
    that exists but fails to import fails the build: the reference must not
    silently lose a subpackage.
    """
    names = ["captum_robust"]
    for info in pkgutil.iter_modules(captum_robust.__path__):
        if not info.name.startswith("_"):
            names.append(f"captum_robust.{info.name}")
    rank = {name: i for i, name in enumerate(PREFERRED_ORDER)}
    return sorted(names, key=lambda n: (rank.get(n, len(rank)), n))


def public_names(modname: str) -> list[str]:
    """The names of the module's ``__all__`` that it documents.

    A name that moved to another subpackage and is still served by this one
    through a module ``__getattr__`` (so it is not in the module's namespace)
    is documented once, by the subpackage it moved to.
    """
    module = importlib.import_module(modname)
    names = getattr(module, "__all__", None) or []
    return [name for name in names if not name.startswith("_") and name in vars(module)]


def _summary(modname: str) -> str:
    doc = importlib.import_module(modname).__doc__ or ""
    first = doc.strip().split("\n\n")[0]
    return " ".join(first.split()).replace("|", "\\|")


def write_api_pages() -> list[tuple[str, int, str]]:
    """Write one page per module with a non-empty ``__all__``.

    Returns (module name, number of public names, docstring summary) per page.
    """
    shutil.rmtree(GENERATED_DIR, ignore_errors=True)
    GENERATED_DIR.mkdir(parents=True)
    written = []
    for modname in public_modules():
        names = public_names(modname)
        if not names:
            continue
        entries = "\n".join(f"   {name}" for name in names)
        page = (
            f"{modname}\n{'=' * len(modname)}\n\n"
            f".. automodule:: {modname}\n   :no-members:\n\n"
            f".. currentmodule:: {modname}\n\n"
            f".. autosummary::\n   :toctree: .\n   :nosignatures:\n\n{entries}\n"
        )
        (GENERATED_DIR / f"{modname}.rst").write_text(page, encoding="utf-8")
        written.append((modname, len(names), _summary(modname)))
    return written


API_MODULES = write_api_pages()
# Name the pages explicitly: autosummary otherwise scans the documents that an
# incremental build found last time, and misses a subpackage that is new.
autosummary_generate = [f"api/generated/{modname}.rst" for modname, _, _ in API_MODULES]

# -- Tutorials ----------------------------------------------------------------

TUTORIALS_DIR = REPO_ROOT / "tutorials"
TUTORIAL_SUFFIXES = (".ipynb", ".md")


def tutorial_docnames() -> list[str]:
    if not TUTORIALS_DIR.is_dir():
        return []
    found = [
        path
        for path in TUTORIALS_DIR.iterdir()
        if path.is_file()
        and path.suffix in TUTORIAL_SUFFIXES
        and path.name.lower() != "readme.md"
        and not path.name.startswith((".", "_"))
    ]
    return [f"tutorials/{path.stem}" for path in sorted(found)]


TUTORIALS = tutorial_docnames()
if not TUTORIALS:
    html_sidebars["tutorials"] = []
THUMBNAIL_DIR = "_static/thumbnails"  # in the built site, written at build-finished


def _tutorial_source(docname: str) -> Path:
    stem = docname.split("/", 1)[1]
    for suffix in TUTORIAL_SUFFIXES:
        path = TUTORIALS_DIR / f"{stem}{suffix}"
        if path.is_file():
            return path
    raise FileNotFoundError(docname)


def tutorial_card(docname: str) -> tuple[str, str]:
    """(title, one-line summary) of a tutorial, read from its source.

    The title is the notebook's ``# Title`` heading; the summary is the
    ``summary`` entry of its metadata (``metadata.captum_robust.summary`` in an
    ``.ipynb``, a top-level ``summary:`` line in a MyST notebook's header).
    """
    path = _tutorial_source(docname)
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".ipynb":
        notebook = json.loads(text)
        summary = notebook.get("metadata", {}).get("captum_robust", {}).get("summary")
        markdown = "\n".join(
            "".join(cell["source"])
            for cell in notebook["cells"]
            if cell["cell_type"] == "markdown"
        )
    else:
        header = re.match(r"---\n(.*?)\n---\n", text, re.DOTALL)
        found = header and re.search(r"^summary:\s*(.+)$", header.group(1), re.M)
        summary = found.group(1).strip().strip("\"'") if found else None
        markdown = text
    title = re.search(r"^# (.+)$", markdown, re.MULTILINE)
    if not summary or title is None:
        raise ValueError(
            f"{path.name}: a tutorial needs a '# Title' heading and a one-line "
            "summary in its metadata (see tutorials/README.md)"
        )
    return title.group(1).strip(), " ".join(summary.split())


# Readers download the notebooks as committed (no outputs): html_extra_path
# copies them to notebooks/ at the root of the site, next to their pages.
NOTEBOOKS_EXTRA = DOCS_DIR / "_build" / "notebooks_extra"
shutil.rmtree(NOTEBOOKS_EXTRA, ignore_errors=True)
(NOTEBOOKS_EXTRA / "notebooks").mkdir(parents=True)
for _docname in TUTORIALS:
    _source = _tutorial_source(_docname)
    shutil.copy2(_source, NOTEBOOKS_EXTRA / "notebooks" / _source.name)
html_extra_path = [str(NOTEBOOKS_EXTRA)]

# -- Lists filled in at read time ---------------------------------------------
# A page holds a line ``<!-- autolist: NAME -->``; it is replaced by a toctree of
# the pages found above, or by a sentence when there are none yet. A plain glob
# toctree would warn (and fail the -W build) while a list is still empty.


def _toctree(entries: list[str], maxdepth: int, hidden: bool = False) -> str:
    lines = "\n".join(entries)
    options = f":maxdepth: {maxdepth}\n" + (":hidden:\n" if hidden else "")
    return f"```{{toctree}}\n{options}\n{lines}\n```\n"


def _autolist(name: str) -> str:
    if name == "tutorials":
        if not TUTORIALS:
            return "No tutorial has been published yet.\n"
        return _tutorial_cards() + "\n" + _toctree(TUTORIALS, maxdepth=1, hidden=True)
    if name == "api":
        if not API_MODULES:
            return "No public name has been exported yet.\n"
        pages = [f"generated/{modname}" for modname, _, _ in API_MODULES]
        rows = "\n".join(
            f"| {{doc}}`{modname} <generated/{modname}>` | {count} | {summary} |"
            for modname, count, summary in API_MODULES
        )
        table = f"| subpackage | names | what it holds |\n| --- | --- | --- |\n{rows}\n"
        return table + "\n" + _toctree(pages, maxdepth=1, hidden=True)
    raise ValueError(f"unknown autolist {name!r}")


def _tutorial_cards() -> str:
    """A grid of cards (thumbnail, title, summary), as raw HTML in tutorials.md."""
    cards = []
    for docname in TUTORIALS:
        title, summary = tutorial_card(docname)
        stem = docname.split("/", 1)[1]
        cards.append(
            f'<a class="tutorial-card" href="{docname}.html">'
            f'<img src="{THUMBNAIL_DIR}/{stem}.png" alt="" loading="lazy">'
            f'<span class="tutorial-card-title">{html.escape(title)}</span>'
            f'<span class="tutorial-card-summary">{html.escape(summary)}</span></a>'
        )
    return '<div class="tutorial-cards">\n' + "\n".join(cards) + "\n</div>\n"


# The thumbnail of a tutorial is the first figure its executed page shows, so it
# always matches the code. It is copied once the pages are written; the home page
# shows one of them as well.
_FIRST_OUTPUT_IMAGE = re.compile(
    r'<div class="cell_output docutils container">.*?<img[^>]*\ssrc="([^"]+)"',
    re.DOTALL,
)


def _write_thumbnails(app, exception) -> None:
    if exception is not None or app.builder.format != "html":
        return
    outdir = Path(app.outdir)
    target = outdir / THUMBNAIL_DIR
    target.mkdir(parents=True, exist_ok=True)
    for docname in TUTORIALS:
        page = outdir / f"{docname}.html"
        found = _FIRST_OUTPUT_IMAGE.search(page.read_text(encoding="utf-8"))
        if found is None:
            if nb_execution_mode == "off":
                continue  # nothing was executed; the browser check reports it
            raise RuntimeError(f"{docname}: no figure in its output for a thumbnail")
        image = (page.parent / found.group(1)).resolve()
        shutil.copy2(image, target / f"{docname.split('/', 1)[1]}.png")


def _page_context(app, pagename, templatename, context, doctree) -> None:
    # Tutorial pages get a download link to their notebook (_templates/).
    if pagename in TUTORIALS:
        context["notebook_download"] = f"notebooks/{_tutorial_source(pagename).name}"


def _fill_autolists(app, docname, source) -> None:
    text = source[0]
    for name in ("tutorials", "api"):
        marker = f"<!-- autolist: {name} -->"
        if marker in text:
            text = text.replace(marker, _autolist(name))
    source[0] = text


# -- Docstrings of re-exported constants ----------------------------------------
# A constant such as ``CLASS_NAMES = (...)`` documented by a string after it in a
# private module, and re-exported by its subpackage, would otherwise show the
# docstring of its type ("Built-in immutable sequence."): take the attribute
# docstring from the module that defines it.


def _defining_attribute_doc(fullname: str, obj: object) -> list[str] | None:
    from sphinx.pycode import ModuleAnalyzer
    from sphinx.pycode import PycodeError

    modname, _, attr = fullname.rpartition(".")
    for name, module in sorted(sys.modules.items()):
        if not name.startswith(f"{modname}.") or module is None:
            continue
        if getattr(module, attr, _MISSING) is not obj:
            continue
        try:
            docs = ModuleAnalyzer.for_module(name).find_attr_docs()
        except PycodeError:
            continue
        if ("", attr) in docs:
            return list(docs[("", attr)])
    return None


_MISSING = object()


def _attribute_docstring(app, what, name, obj, options, lines) -> None:
    if what not in ("data", "attribute"):
        return
    # A NamedTuple field's type keeps __doc__ as a slot, not a string.
    type_doc = type(obj).__doc__
    type_doc = type_doc.strip() if isinstance(type_doc, str) else ""
    if lines and "\n".join(lines).strip() != type_doc:
        return
    found = _defining_attribute_doc(name, obj)
    # No docstring of its own: say nothing rather than describe its type.
    lines[:] = [line.rstrip("\n") for line in found] if found is not None else []


# -- Plain-text |x| in docstrings ----------------------------------------------
# Docstrings write a set's size or an absolute value as |M| or |x|, which reads
# well in help() but is a substitution reference to docutils ("Undefined
# substitution referenced"). Escape the bars outside literals, doctests, code
# and math blocks, so the text renders as written.

_SUBSTITUTION = re.compile(r"(?<![\\|])\|([^\s|`](?:[^|`]{0,30}?[^\s|`])?)\|(?![_|])")
_INLINE_LITERAL = re.compile(r"(``.+?``|`[^`]*`)")
_LITERAL_DIRECTIVE = re.compile(r"^\s*\.\. (code-block|code|sourcecode|math)::")


def _escape_bars(line: str) -> str:
    parts = _INLINE_LITERAL.split(line)
    for i in range(0, len(parts), 2):  # even parts lie outside inline literals
        parts[i] = _SUBSTITUTION.sub(r"\\|\1\\|", parts[i])
    return "".join(parts)


def _plain_bars(app, what, name, obj, options, lines) -> None:
    literal_indent = None  # indentation of the line that opened a literal block
    for i, line in enumerate(lines):
        stripped = line.lstrip()
        indent = len(line) - len(stripped)
        if literal_indent is not None:
            if not stripped or indent > literal_indent:
                continue
            literal_indent = None
        if stripped.startswith((">>>", "...")):
            continue
        if stripped.endswith("::") or _LITERAL_DIRECTIVE.match(line):
            literal_indent = indent
            if _LITERAL_DIRECTIVE.match(line):
                continue
        lines[i] = _escape_bars(line)


def _autolist_pages_outdated(app, env, added, changed, removed) -> list[str]:
    # Their text depends on files elsewhere: re-read them on every build.
    return [doc for doc in ("tutorials", "api/index") if doc in env.found_docs]


# -- Line continuations in raw docstrings ---------------------------------------
# In an r"""...""" docstring a line ending in a backslash (a long list of
# parameter names, say) keeps the backslash and the line break; the unindented
# next line then stops the docstring from being dedented, and napoleon finds no
# numpy sections. Join such lines as a plain string literal would, before
# napoleon reads the sections (hence the priority below napoleon's 500).


def _join_continued_lines(app, what, name, obj, options, lines) -> None:
    joined = False
    i = 0
    while i < len(lines) - 1:
        line = lines[i]
        if line.endswith("\\") and not line.endswith("\\\\"):
            lines[i] = line[:-1] + lines[i + 1].lstrip()
            del lines[i + 1]
            joined = True
        else:
            i += 1
    if not joined:
        return
    # The unindented continuation line also kept the docstring from being
    # dedented; dedent the body now that it is gone.
    body = [line for line in lines[1:] if line.strip()]
    indent = min((len(line) - len(line.lstrip()) for line in body), default=0)
    if indent:
        lines[1:] = [line[indent:] if line.strip() else "" for line in lines[1:]]


def _public_bases(app, name, obj, options, bases):
    """Show a private base (``_PairScore``) as its first public ancestor: the
    page cannot link to a private class, and its name tells the reader nothing."""
    public = []
    for base in bases:
        if base.__name__.startswith("_"):
            base = next(c for c in base.__mro__ if not c.__name__.startswith("_"))
        if base not in public:
            public.append(base)
    bases[:] = public


def setup(app):
    app.connect("autodoc-process-bases", _public_bases)
    app.connect("source-read", _fill_autolists)
    app.connect("html-page-context", _page_context)
    app.connect("build-finished", _write_thumbnails)
    app.connect("env-get-outdated", _autolist_pages_outdated)
    app.connect("autodoc-process-docstring", _join_continued_lines, priority=400)
    app.connect("autodoc-process-docstring", _attribute_docstring)
    app.connect("autodoc-process-docstring", _plain_bars)
    return {"parallel_read_safe": True}
