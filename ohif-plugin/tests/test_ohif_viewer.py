#!/usr/bin/env python3
"""End to end: Orthanc with DICOMweb and imhost, the prebuilt OHIF viewer with imhost's extension
and mode, headless Chromium (puppeteer-core, e2e.mjs) clicking "Generate perfusion maps".

Checks against the imhost command's report on the same DICOM study: the core and hypoperfusion
volumes the page shows; the new series listed; the CBF map drawn as a colour overlay (pixels
counted in a screenshot); a run cancelled from the panel ends cancelled with nothing stored.

    test_ohif_viewer.py PREFIX WORK PHANTOM_DICOM CLI_OUT OHIF_DIST NODE_MODULES_PARENT

Screenshots go to WORK/artefacts. Run it in a private network namespace (run-tests.sh does).
"""

import json
import os
import subprocess
import sys
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from orthanc_env import Orthanc  # noqa: E402

PREFIX, WORK, PHANTOM, CLI_OUT, DIST = sys.argv[1:6]
PLUGIN = os.path.join(PREFIX, "lib", "libOrthancImhost.so")
MODELS = os.path.join(os.path.dirname(os.path.dirname(HERE)), "models")
VIEWER_PORT = 3000
failures = []


def check(cond, what):
    print(("ok   " if cond else "FAIL ") + what, flush=True)
    if not cond:
        failures.append(what)


def main():
    artefacts = os.path.join(WORK, "artefacts")
    o = Orthanc(os.path.join(WORK, "viewer-orthanc"), PLUGIN, imhost={"ModelFolders": [MODELS], "ConcurrentJobs": 2})
    o.start()
    server = None
    try:
        study = o.upload_folder(PHANTOM)[0]
        uid = o.get(f"/studies/{study}")["MainDicomTags"]["StudyInstanceUID"]
        before = sorted(o.get(f"/studies/{study}")["Series"])
        server = subprocess.Popen(["node", os.path.join(HERE, "..", "viewer", "serve.mjs"), "--dist", DIST, "--port", str(VIEWER_PORT),
                                   "--orthanc", f"http://127.0.0.1:{o.port}", "--user", ":".join(o.auth)],
                                  stdout=open(os.path.join(WORK, "serve.log"), "w"), stderr=subprocess.STDOUT)
        for _ in range(100):
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{VIEWER_PORT}/app-config.js", timeout=2).read()
                break
            except OSError:
                time.sleep(0.1)
        t0 = time.time()
        run = subprocess.run(["node", os.path.join(HERE, "e2e.mjs"), f"http://127.0.0.1:{VIEWER_PORT}", uid, artefacts],
                             capture_output=True, text=True, timeout=900)
        print(f"browser session: {time.time() - t0:.1f} s", flush=True)
        try:
            page = json.loads(run.stdout.strip().splitlines()[-1])
        except (IndexError, json.JSONDecodeError):
            print(run.stdout[-3000:], run.stderr[-3000:])
            check(False, "e2e.mjs printed its report")
            return
        json.dump(page, open(os.path.join(artefacts, "page.json"), "w"), indent=1)
        if "exception" in page:
            print(page["exception"])
            print("console errors:", "\n  ".join(page.get("console", [])[:15]))
        cli = json.load(open(os.path.join(CLI_OUT, "result.json")))
        check(page.get("models", 0) >= 6, f"the panel lists the registry's models ({page.get('models')})")
        check("nihss" in page.get("optionFields", []), f"the options form comes from the manifest ({len(page.get('optionFields', []))} fields)")
        check(page.get("state") == "success", f"the run ends in success in the page ({page.get('state')}: {page.get('error')})")
        check(len(page.get("stages", [])) >= 2, f"the panel showed the progress stages ({page.get('stages')})")
        rows = page.get("rows", {})
        for key in ["core_ml", "hypoperfusion_ml", "mismatch_ml"]:
            shown = rows.get(key, {}).get("value")
            want = cli["scores"][key]
            check(shown is not None and abs(float(shown) - want) <= 1e-9 * max(1, want),
                  f"the page's {key} ({rows.get(key, {}).get('text')}) equals the command's {want:.4f}")
        check("Research use only" in rows.get("research_use_only", {}).get("text", ""), "the table says research use only")
        check("defuse3" in rows and rows["defuse3"]["text"].startswith("met"), f"DEFUSE-3 shown ({rows.get('defuse3', {}).get('text')})")
        after = sorted(o.get(f"/studies/{study}")["Series"])
        check(page.get("newSeries") == len(after) - len(before) == 12, f"the panel names the {len(after) - len(before)} new series")
        check(page.get("newDisplaySets", 0) >= 6, f"the new series appear in the viewer ({page.get('newDisplaySets')} display sets)")
        check(page.get("overlay") == "cbf", f"the CBF map is loaded as the overlay ({page.get('overlay')})")
        px = page.get("overlayPixels", {})
        base = page.get("baselinePixels", {})
        drawn = px.get("coloured", 0) > 2000 + 2 * base.get("coloured", 0)
        check(drawn, f"the CBF map is drawn over the CTP average: {px.get('coloured')} coloured pixels of {px.get('total')} "
                     f"in the viewport (the CTP alone {base.get('coloured')})")
        hues = px.get("hues", [])
        spread = sum(1 for h in hues if h >= 0.02 * max(1, px.get("coloured", 0)))
        check(page.get("overlayWindow") and spread >= 3,
              f"the map is shown through its own window ({page.get('overlayWindow')}), not saturated: "
              f"{spread} hue bins of 6 hold ≥ 2 % of its pixels ({hues})")
        print(f"click to results {page.get('resultsShownSeconds', -1):.1f} s, to maps shown {page.get('mapsShownSeconds', -1):.1f} s", flush=True)
        check(page.get("cancelState") == "cancelled" and page.get("cancelSeconds", 99) < 2.0,
              f"Cancel in the panel ends the run in {page.get('cancelSeconds', -1):.2f} s ({page.get('cancelState')}: {page.get('cancelStage')})")
        if page.get("cancelJob"):
            job = o.get(f"/jobs/{page['cancelJob']}")
            check(job["State"] in ("Failure", "Canceled"), f"the cancelled job is {job['State']} in Orthanc")
        check(sorted(o.get(f"/studies/{study}")["Series"]) == after, "the cancelled run stored nothing")
        json.dump({"resultsShownSeconds": page.get("resultsShownSeconds"), "mapsShownSeconds": page.get("mapsShownSeconds")},
                  open(os.path.join(artefacts, "timing.json"), "w"))
    finally:
        if server:
            server.terminate()
        o.stop()
    if failures:
        print(f"\n{len(failures)} viewer check(s) failed; logs and screenshots under {WORK}")
        sys.exit(1)
    print("\nall OHIF viewer checks passed")


if __name__ == "__main__":
    main()
