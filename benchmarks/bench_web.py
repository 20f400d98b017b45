"""Web page timings in a real headless Chromium, against the bare library call.

Starts ``braintumor serve``'s app on a free loopback port (its worker warm, the sample
case prepared, as a server is a little after it starts), then in the page:

* clicks "Try the sample case" and times click -> outline drawn, and click -> done;
* clicks twice on the tumour in correction mode and times click -> updated outline;
* with ``--case DIR`` (a BraTS case folder), uploads its four files and times
  upload end -> outline drawn.

The reference is ``segment(case, method, **options)`` with the options the page sends
(the CNN's fast mode, or with ``--accurate`` the ensemble at full overlap, as the page's
*accurate* box asks), called directly in this process on the same sample case; the
page's overhead is printed as a ratio to it.

    python benchmarks/bench_web.py [--method watershed] [--accurate] [--shape 240 240 155]
        [--case ../shared/data/brats2018/<case>] [--screenshot docs/screenshot.png]
"""

from __future__ import annotations

import argparse
import socket
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _coloured_point(png: bytes) -> tuple[float, float]:
    import io

    import numpy as np
    from PIL import Image

    a = np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).astype(int)
    r, g, b = a[..., 0], a[..., 1], a[..., 2]
    mask = ((np.minimum(r, g) - b) > 60) | ((r - np.maximum(g, b)) > 60)
    ys, xs = np.nonzero(mask)
    return float(np.median(xs)), float(np.median(ys))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--method", default=None, help="default: the best available")
    ap.add_argument("--shape", type=int, nargs=3, default=None,
                    help="sample size (default: the phantom's full BraTS size)")
    ap.add_argument("--case", type=Path, default=None, help="a BraTS case folder to upload")
    ap.add_argument("--screenshot", type=Path, default=None)
    ap.add_argument("--accurate", action="store_true",
                    help="tick the page's accurate box (the CNN ensemble at full overlap)")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--layout", default=None, help="viewer layout for the screenshot "
                    "(multi, slices, axial, ...)")
    args = ap.parse_args()

    import uvicorn
    from playwright.sync_api import sync_playwright

    from braintumor.web.app import _ready_methods, create_app

    methods = _ready_methods()
    method = args.method or ("cnn" if "cnn" in methods else methods[0])
    sample = {"shape": list(args.shape)} if args.shape else {}
    data = Path(tempfile.mkdtemp(prefix="bench-web-"))
    app = create_app(data, token="", sample_options=sample, threads=args.threads)
    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port,
                                           log_level="warning"))
    th = threading.Thread(target=server.run, daemon=True)
    th.start()
    url = f"http://127.0.0.1:{port}"
    t0 = time.monotonic()
    while not server.started:
        time.sleep(0.05)
    # wait for the worker to have prepared the sample case, as a running server has
    while not any((data / "sample").glob("*/*")):
        time.sleep(0.5)
    print(f"server up, sample prepared: {time.monotonic() - t0:.1f} s after start")
    out: dict[str, Any] = {"method": method, "accurate": args.accurate}
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1500, "height": 900})
        page.goto(url + "/")
        page.wait_for_selector(f"#method option[value='{method}']", state="attached")
        page.select_option("#method", method)
        page.set_checked("#want-accurate", args.accurate)
        t = time.monotonic()
        page.click("#sample-btn")
        page.wait_for_selector("body[data-viewer='overlay']", timeout=600_000)
        out["sample_click_to_overlay_s"] = time.monotonic() - t
        page.wait_for_selector("body[data-status='done']", timeout=600_000)
        out["sample_click_to_done_s"] = time.monotonic() - t
        job_id = page.url.rsplit("/", 1)[1]
        job = page.evaluate(f"() => fetch('/api/jobs/{job_id}').then(r => r.json())")
        out["sample_worker_job_start_to_outline_s"] = float(job["result"]["outline_s"])
        out["sample_worker_segment_s"] = float(job["result"]["segment_s"])
        tl = page.evaluate("() => window.braintumor.timeline")
        for k, v in sorted(tl.items(), key=lambda kv: kv[1]):
            out[f"sample_page_{k}_s"] = (v - tl["click"]) / 1000
        page.wait_for_timeout(800)
        if args.layout:
            page.select_option("#layout", args.layout)
            page.wait_for_timeout(3000)
        if args.screenshot:
            # the page's top (header, toolbar): the sample button moved focus, and the
            # view, down to the job's status
            page.evaluate("() => window.scrollTo(0, 0)")
            args.screenshot.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(args.screenshot))
            print(f"screenshot: {args.screenshot}")
        # corrections: two clicks on the tumour in the axial view
        page.select_option("#layout", "axial")
        page.wait_for_timeout(600)
        page.check("#correct-toggle")
        for i, kind in enumerate(("outside", "inside")):
            x, y = _coloured_point(page.locator("#gl").screenshot())
            page.check(f"input[name=seed-kind][value={kind}]")
            t = time.monotonic()
            page.locator("#gl").click(position={"x": x, "y": y})
            page.wait_for_selector(f"body[data-result='v{i + 1}']", timeout=120_000)
            page.wait_for_selector("#correct-msg:has-text('Updated')", timeout=120_000)
            out[f"correction_{i + 1}_click_to_update_s"] = time.monotonic() - t
            timing = page.evaluate("() => window.braintumor.lastCorrection")
            out[f"correction_{i + 1}_request_s"] = timing["request_ms"] / 1000
            out[f"correction_{i + 1}_redraw_s"] = timing["redraw_ms"] / 1000
            job_id = page.url.rsplit("/", 1)[1]
            job = page.evaluate(f"() => fetch('/api/jobs/{job_id}').then(r => r.json())")
            out[f"correction_{i + 1}_server_s"] = float(job["result"]["last_correction_s"])
        page.uncheck("#correct-toggle")
        if args.case:
            files = sorted(f for f in args.case.iterdir() if "seg" not in f.name
                           and f.name.endswith((".nii", ".nii.gz")))
            page.goto(url + "/")
            page.wait_for_selector(f"#method option[value='{method}']", state="attached")
            page.select_option("#method", method)
            page.set_checked("#want-accurate", args.accurate)
            page.set_input_files("#file-input", [str(f) for f in files])
            page.click("#submit-btn")
            page.wait_for_selector("body[data-viewer='overlay']", timeout=600_000)
            tl = page.evaluate("() => window.braintumor.timeline")
            # from the browser's last byte sent to the outline drawn
            out["upload_end_to_overlay_s"] = (tl["outline_shown"] - tl["upload_sent"]) / 1000
            out["upload_s"] = (tl["upload_sent"] - tl["upload_start"]) / 1000
        browser.close()
    server.should_exit = True
    th.join(30)

    # reference: the same segmentation called directly, in this process
    from braintumor.cases import load_case
    from braintumor.segment import segment
    from braintumor.web.worker import sample_files

    case = load_case(sample_files(data / "sample", sample))
    # with the options the page sends (the CNN's fast mode unless --accurate)
    from braintumor.web.app import _job_options

    opts = _job_options(False, args.accurate)
    if method == "watershed":
        opts.pop("fast", None)
    t = time.perf_counter()
    segment(case, method, **opts)
    ref = time.perf_counter() - t
    out["reference_segment_s"] = ref
    for k, v in out.items():
        print(f"{k}: {v:.2f}" if isinstance(v, float) else f"{k}: {v}")
    print(f"ratio sample click->overlay / bare segment(): "
          f"{out['sample_click_to_overlay_s'] / ref:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
