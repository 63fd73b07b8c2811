"""Check the built documentation site the way a reader would see it.

Run by ``make docs`` after sphinx-build::

    python docs/check_site.py [docs/_build/html]

It installs nothing: it needs Chromium at /usr/bin/chromium (or $CHROMIUM), which
the Makefile installs from Debian's packages when it is missing, and Pillow,
which comes with matplotlib.

The check fails (exit status 1) when

* a link or resource inside the site is broken: every ``href``/``src`` of every
  built HTML page that points into the site must name an existing file, and the
  ``#anchor`` of a link to another built page must exist in that page;
* an ``<img>`` does not resolve to a file in the site (or a ``data:`` URI);
* a public name of a subpackage's ``__all__`` has no API page, or a notebook in
  ``tutorials/`` has no page, or its page no link to download the notebook;
* headless Chromium, opening every top-level page, every tutorial, the API
  index and the first page with a formula over a loopback HTTP server, finds
  little visible text in the page's main content, a Python traceback, a
  screenshot that is one flat colour, formulas that MathJax (served from the
  site) did not render, or a box in the article that is cut off: code, output
  or a table whose content is wider than its box, in a box that neither scrolls
  (no scroll bar) nor wraps, or a page that scrolls sideways. The clipping
  check first runs on a fixture with two clipped boxes and fails if it misses
  either.

Screenshots are written to ``docs/_build/screenshots/``.
"""

from __future__ import annotations

import argparse
import functools
import html
import http.server
import importlib
import io
import json
import os
import pkgutil
import posixpath
import re
import shutil
import subprocess
import sys
import tempfile
import threading
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote
from urllib.parse import urlsplit

DOCS_DIR = Path(__file__).resolve().parent
REPO_ROOT = DOCS_DIR.parent
MIN_VISIBLE_CHARS = 200
TRACEBACK = "Traceback (most recent call last)"
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--hide-scrollbars",
    "--window-size=1280,900",
]
# Attributes that make the browser load or navigate to a URL.
URL_ATTRIBUTES = {
    "a": ("href",),
    "link": ("href",),
    "script": ("src",),
    "img": ("src",),
    "source": ("src",),
    "iframe": ("src",),
    "video": ("src", "poster"),
    "audio": ("src",),
    "embed": ("src",),
    "object": ("data",),
}


# -- Static checks of the built files -----------------------------------------


class _PageParser(HTMLParser):
    """Collects URLs, element ids and (optionally) visible text of one page."""

    SKIP_TEXT = {"script", "style", "noscript", "template", "head", "title"}

    def __init__(self, text_root_id: str | None = None) -> None:
        super().__init__(convert_charrefs=True)
        self.urls: list[tuple[str, str, str]] = []  # (tag, attribute, value)
        self.ids: set[str] = set()
        self.text_root_id = text_root_id
        self._stack: list[tuple[str, bool, bool]] = []  # (tag, skip, in_root)
        self.text_parts: list[str] = []
        self.all_text_parts: list[str] = []

    VOID = {
        "area",
        "base",
        "br",
        "col",
        "embed",
        "hr",
        "img",
        "input",
        "link",
        "meta",
        "source",
        "track",
        "wbr",
    }

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        for name in ("id", "name"):
            if attrs.get(name):
                self.ids.add(attrs[name])
        for attr in URL_ATTRIBUTES.get(tag, ()):
            value = attrs.get(attr)
            if value is not None:
                self.urls.append((tag, attr, value))
        if attrs.get("srcset"):
            for candidate in attrs["srcset"].split(","):
                if candidate.strip():
                    self.urls.append((tag, "srcset", candidate.split()[0]))
        if tag in self.VOID:
            return
        parent_skip = self._stack[-1][1] if self._stack else False
        parent_root = self._stack[-1][2] if self._stack else False
        hidden = "hidden" in attrs or "display: none" in (attrs.get("style") or "")
        skip = parent_skip or tag in self.SKIP_TEXT or hidden
        in_root = parent_root or (
            self.text_root_id is not None and attrs.get("id") == self.text_root_id
        )
        self._stack.append((tag, skip, in_root))

    def handle_startendtag(self, tag, attrs):
        self.handle_starttag(tag, attrs)
        if tag not in self.VOID and self._stack and self._stack[-1][0] == tag:
            self._stack.pop()

    def handle_endtag(self, tag):
        # Pop up to the matching tag; tolerate unclosed elements.
        for i in range(len(self._stack) - 1, -1, -1):
            if self._stack[i][0] == tag:
                del self._stack[i:]
                return

    def handle_data(self, data):
        if self._stack and self._stack[-1][1]:
            return
        self.all_text_parts.append(data)
        if self._stack and self._stack[-1][2]:
            self.text_parts.append(data)

    def visible_text(self, root_only: bool = True) -> str:
        parts = self.text_parts if root_only else self.all_text_parts
        return " ".join(" ".join(parts).split())


def _parse_file(path: Path) -> _PageParser:
    parser = _PageParser()
    parser.feed(path.read_text(encoding="utf-8", errors="replace"))
    parser.close()
    return parser


def _is_external(url: str) -> bool:
    parts = urlsplit(url)
    return bool(parts.scheme) or url.startswith("//")


def check_links(site: Path) -> list[str]:
    """Every internal href/src must exist; anchors into other pages too."""
    problems: list[str] = []
    # _static/ holds theme templates (Jinja source), not pages.
    pages = sorted(
        p for p in site.rglob("*.html") if p.relative_to(site).parts[0] != "_static"
    )
    parsed = {page: _parse_file(page) for page in pages}
    site_resolved = site.resolve()
    checked = 0
    for page, parser in parsed.items():
        rel_page = page.relative_to(site).as_posix()
        for tag, attr, url in parser.urls:
            url = url.strip()
            if tag == "img" and attr in ("src", "srcset"):
                if url.startswith("data:"):
                    continue
                if _is_external(url) or not url:
                    problems.append(f"{rel_page}: <img {attr}={url!r}> is not a file")
                    continue
            if not url or url.startswith(("#", "mailto:", "javascript:", "data:")):
                continue
            if _is_external(url):
                continue
            parts = urlsplit(url)
            target_rel = posixpath.normpath(
                posixpath.join(posixpath.dirname(rel_page), unquote(parts.path))
            )
            target = (site / target_rel).resolve()
            if parts.path.endswith("/") or target.is_dir():
                target = target / "index.html"
            checked += 1
            if not target.is_relative_to(site_resolved):
                problems.append(f"{rel_page}: {tag} {attr}={url!r} leaves the site")
            elif not target.is_file():
                problems.append(f"{rel_page}: {tag} {attr}={url!r} -> missing file")
            elif parts.fragment and target.suffix == ".html" and tag == "a":
                anchor = unquote(parts.fragment)
                target_parser = parsed.get(site / target.relative_to(site_resolved))
                if target_parser is not None and anchor not in target_parser.ids:
                    problems.append(
                        f"{rel_page}: link {url!r} -> no #{anchor} in the target"
                    )
    print(f"links: {checked} internal URLs in {len(pages)} pages checked")
    return problems


def _public_modules() -> list[str]:
    import captum_robust

    names = ["captum_robust"]
    for info in pkgutil.iter_modules(captum_robust.__path__):
        if not info.name.startswith("_"):
            names.append(f"captum_robust.{info.name}")
    return names


def _is_metric_class(obj: object) -> bool:
    try:
        from torchmetrics import Metric
    except ImportError:  # pragma: no cover - torchmetrics is a dependency
        return False
    return isinstance(obj, type) and issubclass(obj, Metric)


def check_coverage(site: Path) -> list[str]:
    """Every public name has an API page; every tutorial has a page."""
    sys.path.insert(0, str(REPO_ROOT))
    problems: list[str] = []
    count = 0
    for modname in _public_modules():
        module = importlib.import_module(modname)
        for name in getattr(module, "__all__", None) or []:
            # A name served through a module __getattr__ (one that moved to
            # another subpackage) has its page there, as docs/conf.py writes it.
            if name.startswith("_") or name not in vars(module):
                continue
            count += 1
            page = site / "api" / "generated" / f"{modname}.{name}.html"
            if not page.is_file():
                problems.append(f"API: no page for {modname}.{name}")
            elif _is_metric_class(getattr(module, name)):
                # A streaming metric is used through update() and compute():
                # its page must document both, wherever they are defined.
                text = page.read_text(encoding="utf-8")
                for method in ("update", "compute"):
                    if f'id="{modname}.{name}.{method}"' not in text:
                        problems.append(f"API: {modname}.{name} has no {method}()")
    tutorials = _tutorial_sources()
    for source in tutorials:
        page = site / "tutorials" / f"{source.stem}.html"
        if not page.is_file():
            problems.append(f"tutorial {source.name}: no page was built")
        elif f'href="../notebooks/{source.name}"' not in page.read_text(
            encoding="utf-8"
        ):
            problems.append(f"tutorial {source.name}: no link to download it")
    print(f"coverage: {count} public names, {len(tutorials)} tutorials")
    return problems


def _tutorial_sources() -> list[Path]:
    folder = REPO_ROOT / "tutorials"
    if not folder.is_dir():
        return []
    return sorted(
        p
        for p in folder.iterdir()
        if p.is_file()
        and p.suffix in (".ipynb", ".md")
        and p.name.lower() != "readme.md"
        and not p.name.startswith((".", "_"))
    )


# -- Browser checks -----------------------------------------------------------


# Run in every page the browser opens: find boxes in the article whose content
# is wider than the box and that neither scroll (no scroll bar) nor wrap, i.e.
# text or tables cut off or spilling out of the content column; and a page that
# scrolls sideways as a whole. The result goes into an attribute of <html>,
# which --dump-dom then returns.
CLIP_ATTRIBUTE = "data-check-site-clipped"
CLIP_SCRIPT = """<script>
(function () {
  function describe(el) {
    var name = el.tagName.toLowerCase();
    if (el.id) name += "#" + el.id;
    for (var i = 0; i < Math.min(el.classList.length, 3); i++) {
      name += "." + el.classList[i];
    }
    return name;
  }
  function check() {
    var found = [];
    var root = document.getElementById("main-content") || document.body;
    var boxes = root.querySelectorAll(
      ".cell_output, .cell_output *, .cell_input, .cell_input *, " +
      "div.highlight, pre, table, .output, .output *"
    );
    for (var i = 0; i < boxes.length; i++) {
      var el = boxes[i];
      if (el.clientWidth === 0) continue;  // inline: no box of its own
      if (el.scrollWidth <= el.clientWidth + 1) continue;
      var overflow = getComputedStyle(el).overflowX;
      if (overflow === "auto" || overflow === "scroll") continue;
      found.push({
        element: describe(el),
        overflow: overflow,
        scroll_width: el.scrollWidth,
        client_width: el.clientWidth,
        text: (el.textContent || "").trim().slice(0, 60)
      });
    }
    var page = document.scrollingElement || document.documentElement;
    if (page.scrollWidth > page.clientWidth + 1) {
      found.push({
        element: "the page", overflow: "page", scroll_width: page.scrollWidth,
        client_width: page.clientWidth, text: ""
      });
    }
    document.documentElement.setAttribute("CLIP_ATTRIBUTE", JSON.stringify(found));
  }
  window.addEventListener("load", function () { setTimeout(check, 500); });
})();
</script>""".replace("CLIP_ATTRIBUTE", CLIP_ATTRIBUTE)


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    """Serves the site; HTML pages get CLIP_SCRIPT before </body>."""

    def log_message(self, format, *args):
        pass

    def send_head(self):
        path = Path(self.translate_path(self.path))
        if path.is_dir():
            path = path / "index.html"
        if path.suffix != ".html" or not path.is_file():
            return super().send_head()
        body = path.read_bytes()
        script = CLIP_SCRIPT.encode()
        if b"</body>" in body:
            body = body.replace(b"</body>", script + b"</body>", 1)
        else:
            body += script
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        return io.BytesIO(body)


def _serve(site: Path) -> tuple[http.server.ThreadingHTTPServer, str]:
    handler = functools.partial(_QuietHandler, directory=str(site))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    host, port = server.server_address[:2]
    return server, f"http://{host}:{port}"


def _chromium() -> str:
    candidates = [os.environ.get("CHROMIUM"), "/usr/bin/chromium"]
    for candidate in candidates:
        if candidate and Path(candidate).is_file():
            return candidate
    found = shutil.which("chromium")
    if found:
        return found
    raise SystemExit(
        "check_site: Chromium not found at /usr/bin/chromium; `make docs` installs "
        "it with `apt-get install -y chromium`."
    )


def _run_chromium(chromium: str, args: list[str], url: str) -> str:
    with tempfile.TemporaryDirectory(prefix="check-site-chromium-") as profile:
        command = [
            chromium,
            *CHROMIUM_FLAGS,
            f"--user-data-dir={profile}",
            "--virtual-time-budget=5000",
            *args,
            url,
        ]
        env = dict(os.environ, HOME=profile)
        result = subprocess.run(
            command, capture_output=True, text=True, timeout=120, env=env
        )
    if result.returncode != 0:
        raise RuntimeError(
            f"chromium exited with {result.returncode} for {url}:\n{result.stderr}"
        )
    return result.stdout


def _screenshot_is_flat(path: Path) -> tuple[bool, float]:
    """True when (almost) every pixel has the most common colour."""
    from PIL import Image

    with Image.open(path) as image:
        small = image.convert("RGB").resize((320, 225))
    colours = small.getcolors(maxcolors=320 * 225)
    most = max(count for count, _ in colours)
    other = 1.0 - most / (320 * 225)
    return other < 0.01, other


_MATH_MARK = 'class="math notranslate nohighlight"'


def _first_page_with_math(site: Path) -> str | None:
    for page in sorted(site.rglob("*.html")):
        rel = page.relative_to(site)
        if rel.parts[0] in ("_static", "_modules"):
            continue
        if _MATH_MARK in page.read_text(encoding="utf-8", errors="replace"):
            return rel.as_posix()
    return None


def _clipped(dom: str) -> list[dict] | None:
    found = re.search(rf'{CLIP_ATTRIBUTE}="([^"]*)"', dom)
    if found is None:
        return None  # the script did not run
    return json.loads(html.unescape(found.group(1)))


_FIXTURE_LINE = "a line of printed output far longer than its box " * 3
_FIXTURE_STYLES = (  # two clipped boxes, then one that scrolls and one that wraps
    "overflow-x: hidden",
    "overflow-x: visible",
    "overflow-x: auto",
    "white-space: pre-wrap",
)
CLIP_FIXTURE = (
    '<!DOCTYPE html><html><head><meta charset="utf-8"></head><body>'
    '<main id="main-content">'
    + "".join(
        f'<div class="cell_output"><pre style="width: 12em; {style}">'
        f"{_FIXTURE_LINE}</pre></div>"
        for style in _FIXTURE_STYLES
    )
    + "</main></body></html>"
)


def check_clipping_detector(chromium: str) -> list[str]:
    """The clipping check must catch the two clipped boxes of CLIP_FIXTURE.

    The hidden and the visible overflow are cut off or spill out; the box that
    scrolls and the one that wraps are fine. A browser or theme change that
    broke the measurement would otherwise pass every page silently.
    """
    with tempfile.TemporaryDirectory(prefix="check-site-fixture-") as folder:
        (Path(folder) / "index.html").write_text(CLIP_FIXTURE, encoding="utf-8")
        server, base = _serve(Path(folder))
        try:
            dom = _run_chromium(chromium, ["--dump-dom"], f"{base}/index.html")
        finally:
            server.shutdown()
            server.server_close()
    found = _clipped(dom)
    overflows = sorted(item["overflow"] for item in found or [])
    if overflows != ["hidden", "visible"]:
        return [
            "browser: the clipping check is broken: on its fixture it found "
            f"{overflows if found is not None else 'nothing (script did not run)'}"
            ", expected ['hidden', 'visible']"
        ]
    print("browser: clipping check caught both clipped boxes of its fixture")
    return []


def _pages_to_open(site: Path) -> list[str]:
    """Every top-level page, every tutorial, the API index, a page with math."""
    skip = {"genindex.html", "search.html", "py-modindex.html"}
    pages = ["index.html"]
    pages += sorted(
        p.name for p in site.glob("*.html") if p.name not in skip | {"index.html"}
    )
    pages += sorted(
        p.relative_to(site).as_posix() for p in (site / "tutorials").glob("*.html")
    )
    if (site / "api" / "index.html").is_file():
        pages.append("api/index.html")
    math_page = _first_page_with_math(site)
    if math_page is not None and math_page not in pages:
        pages.append(math_page)
    return pages


def check_in_browser(site: Path, shots: Path) -> list[str]:
    chromium = _chromium()
    problems = check_clipping_detector(chromium)
    pages = _pages_to_open(site)
    shots.mkdir(parents=True, exist_ok=True)
    server, base = _serve(site)
    try:
        for page in pages:
            url = f"{base}/{page}"
            name = page.replace("/", "_").removesuffix(".html")
            try:
                dom = _run_chromium(chromium, ["--dump-dom"], url)
                shot = shots / f"{name}.png"
                shot.unlink(missing_ok=True)
                _run_chromium(chromium, [f"--screenshot={shot}"], url)
            except (RuntimeError, subprocess.TimeoutExpired) as error:
                problems.append(f"browser: {page}: {error}")
                continue
            (shots / f"{name}.dom.html").write_text(dom, encoding="utf-8")
            parser = _PageParser(text_root_id="main-content")
            parser.feed(dom)
            parser.close()
            text = parser.visible_text(root_only=True)
            if not text:  # a theme without <main id="main-content">
                text = parser.visible_text(root_only=False)
            if len(text) < MIN_VISIBLE_CHARS:
                problems.append(
                    f"browser: {page} looks blank: {len(text)} characters of "
                    f"visible text (at least {MIN_VISIBLE_CHARS} expected)"
                )
            if TRACEBACK in parser.visible_text(root_only=False):
                problems.append(f"browser: {page} shows a Python traceback")
            if _MATH_MARK in dom and "<mjx-container" not in dom:
                problems.append(f"browser: {page}: MathJax rendered no formula")
            clipped = _clipped(dom)
            if clipped is None:
                problems.append(f"browser: {page}: the clipping check did not run")
            for item in clipped or []:
                problems.append(
                    f"browser: {page}: {item['element']} is cut off "
                    f"({item['scroll_width']} px of content in "
                    f"{item['client_width']} px, overflow {item['overflow']}, "
                    f"no scroll bar): {item['text']!r}"
                )
            if not shot.is_file() or shot.stat().st_size == 0:
                problems.append(f"browser: no screenshot of {page}")
            else:
                flat, other = _screenshot_is_flat(shot)
                if flat:
                    problems.append(
                        f"browser: screenshot of {page} is one flat colour "
                        f"({other:.2%} of pixels differ)"
                    )
            print(
                f"browser: {page}: {len(text)} characters of visible text, "
                f"screenshot {os.path.relpath(shot)}"
            )
    finally:
        server.shutdown()
        server.server_close()
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "site",
        nargs="?",
        default=str(DOCS_DIR / "_build" / "html"),
        help="the built HTML site (default: docs/_build/html)",
    )
    parser.add_argument(
        "--screenshots",
        default=str(DOCS_DIR / "_build" / "screenshots"),
        help="where the screenshots go (default: docs/_build/screenshots)",
    )
    parser.add_argument(
        "--no-browser", action="store_true", help="only the static checks"
    )
    args = parser.parse_args(argv)
    site = Path(args.site).resolve()
    if not (site / "index.html").is_file():
        print(f"check_site: no index.html in {site}; build the site first")
        return 1
    problems = check_links(site) + check_coverage(site)
    if not args.no_browser:
        problems += check_in_browser(site, Path(args.screenshots).resolve())
    if problems:
        print(f"check_site: {len(problems)} problem(s):")
        for problem in problems:
            print(f"  - {problem}")
        return 1
    print("check_site: the site looks right")
    return 0


if __name__ == "__main__":
    sys.exit(main())
