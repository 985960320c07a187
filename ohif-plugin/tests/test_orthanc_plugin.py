#!/usr/bin/env python3
"""The imhost Orthanc plugin in a real Orthanc (Debian's, with its DICOMweb plugin).

Checks, each against an independent value: the job's volumes and scores equal the imhost command's
on the same DICOM study; the stored Parametric Maps and Segmentation read back with highdicom equal
the command's own DICOM output voxel for voxel; authentication guards every route; bad requests,
bad inputs and a crashing isolated plugin fail the job with a readable error while Orthanc keeps
serving and nothing is stored; cancel stops a job within a second; a job interrupted by an Orthanc
restart is resumed or failed, never half-stored; the automatic run on a stable CT series.

    test_orthanc_plugin.py PREFIX WORK PHANTOM_DICOM CLI_OUT CT_SLICE PLUGIN_DIR

CLI_OUT holds `imhost run perfusion-osvd --out CLI_OUT --dicom-out CLI_OUT-dicom` on PHANTOM_DICOM.

Run it in a private network namespace (run-tests.sh does).
"""

import io
import json
import os
import sys
import threading
import time
import traceback

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from orthanc_env import Orthanc  # noqa: E402

PREFIX, WORK, PHANTOM, CLI_OUT, CT_SLICE, PLUGIN_DIR, MOVING, CLI_MOVING = sys.argv[1:9]
PLUGIN = os.path.join(PREFIX, "lib", "libOrthancImhost.so")
MODELS = os.path.join(os.path.dirname(os.path.dirname(HERE)), "models")
IMHOST_CONFIG = {"ModelFolders": [MODELS, PLUGIN_DIR], "IsolatePlugins": True, "ConcurrentJobs": 2, "ThreadsPerJob": 1}

failures = []


def check(cond, what):
    print(("ok   " if cond else "FAIL ") + what, flush=True)
    if not cond:
        failures.append(what)


def close(a, b, rel=1e-9):
    return abs(a - b) <= rel * max(1.0, abs(a), abs(b))


def series_of(o, study):
    return sorted(o.get(f"/studies/{study}")["Series"])


def run_job(o, body, timeout=300):
    j = o.post("/imhost/jobs", body)
    seen = []
    job = o.wait_job(j["ID"], timeout=timeout, seen=seen)
    return j["ID"], job, seen


def test_auth(o):
    for method, path, body in [("GET", "/imhost/models", None), ("POST", "/imhost/jobs", {"model": "mip", "study": "x"}),
                               ("GET", "/imhost/jobs/00000000-0000-0000-0000-000000000000", None)]:
        check(o.status_of(method, path, body, auth=False) == 401, f"{method} {path} without credentials: 401")
    check(o.status_of("GET", "/imhost/models") == 200, "GET /imhost/models with credentials: 200")


def test_models(o):
    listing = o.get("/imhost/models")
    ids = {m["id"] for m in listing["models"]}
    for expected in ["perfusion-osvd", "perfusion-nlr", "perfusion-cnn", "mip", "test.crash", "test.hang"]:
        check(expected in ids, f"/imhost/models lists {expected}")
    check(listing.get("research_use_only") is True, "/imhost/models says research use only")


def test_requests(o, study):
    cases = [
        ({"model": "perfusion-osvd"}, 400, "neither study nor series"),
        ({"model": "perfusion-osvd", "study": study, "plugin": "/tmp/evil.so"}, 400, "an unknown key (a plugin path)"),
        ({"model": "perfusion-osvd", "study": "../../tools/shutdown"}, 400, "a path instead of a study id"),
        ({"model": "perfusion-osvd", "series": ["../instances"]}, 400, "a path instead of a series id"),
        ({"model": "perfusion-osvd", "study": study, "options": "age_years=3"}, 400, "options that are not an object"),
        ({"model": 7, "study": study}, 400, "a model that is not a string"),
    ]
    for body, status, what in cases:
        check(o.status_of("POST", "/imhost/jobs", body) == status, f"POST /imhost/jobs with {what}: {status}")
    check(o.status_of("POST", "/imhost/jobs", b"{not json") == 400, "POST /imhost/jobs with a body that is not JSON: 400")
    big = {"model": "perfusion-osvd", "study": study, "options": {"x": "a" * 70000}}
    check(o.status_of("POST", "/imhost/jobs", big) == 413, "POST /imhost/jobs over the size limit: 413")
    check(o.status_of("GET", "/imhost/jobs/not-a-job") == 400, "GET /imhost/jobs/{bad id}: 400")


def test_perfusion_job(o, study):
    before = series_of(o, study)
    t0 = time.time()
    job_id, job, seen = run_job(o, {"model": "perfusion-osvd", "study": study})
    elapsed = time.time() - t0
    check(job["State"] == "Success", f"perfusion-osvd job ends Success ({elapsed:.1f} s): {job.get('ErrorDescription')}")
    stages = [s for _, s in seen if s]
    check(any(s not in ("queued", "done") for s in stages), f"the job reports its stages ({sorted(set(stages))})")
    summary = o.get(f"/imhost/jobs/{job_id}")
    result = summary["Result"]
    cli = json.load(open(os.path.join(CLI_OUT, "result.json")))
    for name, value in cli["scores"].items():
        check(name in result["scores"] and close(result["scores"][name], value), f"score {name} equals the command's ({value:.4f})")
    cli_readout = cli["report"]["readout"]
    for key in ["core_ml", "hypoperfusion_ml", "mismatch_ml"]:
        if key in cli_readout.get("volumes", {}):
            check(close(result["readout"]["volumes"][key], cli_readout["volumes"][key]), f"read-out {key} equals the command's")
    check(result["qc_flags"] == cli["report"]["qc_flags"], "QC flags equal the command's")
    check(result.get("research_use_only") is True, "the result says research use only")
    after = series_of(o, study)
    new = sorted(set(after) - set(before))
    check(len(new) == len(result["outputs"]), f"{len(new)} new series in the same study, one per output ({len(result['outputs'])})")
    check(sorted(x["series"] for x in result["outputs"]) == new, "the summary names the new series")
    # Visible through DICOMweb at once.
    uid = result["study_instance_uid"]
    qido = o.get(f"/dicom-web/studies/{uid}/series")
    modalities = sorted({s.get("00080060", {}).get("Value", [""])[0] for s in qido})
    check(len(qido) == len(before) + len(new), f"QIDO-RS lists the new series ({modalities})")
    # No identifiers beyond the source study's.
    src_instance = o.get(f"/series/{before[0]}/instances")[0]["ID"]
    src = o.get(f"/instances/{src_instance}/simplified-tags")
    for s in new:
        inst = o.get(f"/series/{s}/instances")[0]["ID"]
        tags = o.get(f"/instances/{inst}/simplified-tags")
        for key in ["PatientName", "PatientID", "PatientBirthDate", "StudyInstanceUID", "AccessionNumber"]:
            if tags.get(key, "") != src.get(key, ""):
                check(False, f"result series {s} has {key} {tags.get(key)!r}, the source {src.get(key)!r}")
    check(True, "result series carry the source study's patient and study identifiers, no others")
    return job_id, result


def test_read_back(o, result):
    """The stored instances, read with highdicom, equal the command's DICOM output."""
    import highdicom as hd
    import numpy as np
    import pydicom

    cli_dir = CLI_OUT + "-dicom"
    cli_files = {}
    for name in os.listdir(cli_dir):
        if not name.endswith(".dcm"):
            continue
        ds = pydicom.dcmread(os.path.join(cli_dir, name))
        cli_files[(ds.SOPClassUID, ds.SeriesDescription)] = os.path.join(cli_dir, name)
    compared = 0
    for out in result["outputs"]:
        if out["kind"] == "reference_image":
            # The CTP average: one CT image per slice, equal to the command's slice for slice.
            cli_average = {int(pydicom.dcmread(p).InstanceNumber): pydicom.dcmread(p).pixel_array
                           for p in (os.path.join(cli_dir, n) for n in os.listdir(cli_dir) if n.startswith("ct_average_"))}
            stored = o.get(f"/series/{out['series']}/instances")
            check(len(stored) == out["instances"] == len(cli_average),
                  f"the CTP average series holds {len(stored)} slices ({out['instances']} reported, the command wrote {len(cli_average)})")
            same = 0
            for s in stored:
                ds = pydicom.dcmread(io.BytesIO(o.get(f"/instances/{s['ID']}/file", raw=True)))
                ref = cli_average.get(int(ds.InstanceNumber))
                same += int(ref is not None and np.array_equal(ds.pixel_array, ref))
            check(same == len(cli_average), f"the CTP average's {same} stored slices equal the command's")
            compared += 1
            continue
        inst = o.get(f"/series/{out['series']}/instances")[0]["ID"]
        data = o.get(f"/instances/{inst}/file", raw=True)
        path = os.path.join(WORK, f"stored_{out['output']}.dcm")
        open(path, "wb").write(data)
        ds = pydicom.dcmread(path)
        key = (ds.SOPClassUID, ds.SeriesDescription)
        if key not in cli_files:
            check(False, f"the command wrote no {out['output']} ({ds.SeriesDescription}) to compare with")
            continue
        ref = pydicom.dcmread(cli_files[key])
        if out["kind"] == "parametric_map":
            a, b = hd.pm.ParametricMap.from_dataset(ds), hd.pm.ParametricMap.from_dataset(ref)
            va = a.pixel_array.astype(np.float64)
            vb = b.pixel_array.astype(np.float64)
            same = va.shape == vb.shape and np.array_equal(va, vb)
            check(same, f"{out['output']}: Parametric Map pixels equal the command's ({va.shape})")
            compared += 1
        elif out["kind"] == "secondary_capture":
            same = np.array_equal(ds.pixel_array, ref.pixel_array)
            check(same, f"the preview's Secondary Capture equals the command's ({ds.Columns}×{ds.Rows})")
            compared += 1
        elif out["kind"] == "segmentation":
            a, b = hd.seg.segread(path), hd.seg.segread(cli_files[key])
            sa = a.get_volume(combine_segments=True).array if hasattr(a, "get_volume") else a.pixel_array
            sb = b.get_volume(combine_segments=True).array if hasattr(b, "get_volume") else b.pixel_array
            check(np.array_equal(sa, sb), f"{out['output']}: Segmentation equals the command's ({int((sa > 0).sum())} voxels)")
            compared += 1
    check(compared >= 5, f"{compared} stored maps and segmentations compared with highdicom")


def test_bad_inputs(o, study, ct_study):
    n_before = {s: len(series_of(o, s)) for s in [study, ct_study]}
    cases = [
        ({"model": "no-such-model", "study": study}, "perfusion-osvd", "a model id that does not exist"),
        ({"model": "perfusion-osvd", "study": "0000dead-0000beef-00000000-00000000-00000000"}, "does not exist", "a study that does not exist"),
        ({"model": "perfusion-osvd", "study": study, "options": {"nihss": 99}}, "nihss", "options outside the schema"),
        ({"model": "perfusion-osvd", "study": study, "options": {"no_such_option": 1}}, "no_such_option", "an unknown option"),
        ({"model": "perfusion-osvd", "study": ct_study}, "", "a single CT slice for a CTP model"),
        ({"model": "test.crash", "study": ct_study}, "", "a plugin that crashes under isolation"),
    ]
    for body, needle, what in cases:
        job_id, job, _ = run_job(o, body)
        error = o.get(f"/imhost/jobs/{job_id}").get("Error", "")
        check(job["State"] == "Failure" and len(error) > 10 and needle in error, f"{what}: job Failure, \"{error[:110]}\"")
        check(o.alive() and o.status_of("GET", "/system") == 200, f"{what}: Orthanc keeps serving")
    for s, n in n_before.items():
        check(len(series_of(o, s)) == n, f"nothing stored in study {s[:8]} by the failed jobs")


def test_cancel(o, study, ct_study):
    for body, what in [({"model": "test.hang", "study": ct_study}, "a hanging isolated plugin"),
                       ({"model": "perfusion-nlr", "study": study}, "an NLR perfusion job")]:
        target = study if "study" in body and body["study"] == study else ct_study
        before = series_of(o, target)
        j = o.post("/imhost/jobs", body)
        deadline = time.time() + 30
        while o.get(f"/jobs/{j['ID']}")["State"] != "Running" and time.time() < deadline:
            time.sleep(0.05)
        time.sleep(0.3)
        t0 = time.time()
        o.post(f"/jobs/{j['ID']}/cancel", {})
        job = o.wait_job(j["ID"], timeout=30)
        took = time.time() - t0
        check(job["State"] in ("Failure", "Canceled") and "cancel" in json.dumps(job).lower(),
              f"{what}: the job ends cancelled ({job['State']}, {job.get('ErrorDescription')})")
        check(took < 1.0, f"{what}: the cancel took {took:.2f} s (< 1 s)")
        check(series_of(o, target) == before, f"{what}: nothing stored after the cancel")


def rss_mib(pid):
    """The resident memory of a process, MiB (from /proc)."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def test_concurrent(o, study, n=20):
    """n jobs submitted at once (Orthanc and imhost ConcurrentJobs 2): all Success with the
    command's scores, every result series stored once and complete, Orthanc's memory bounded.
    Prints the load figures BENCHMARKS.md quotes (jobs per minute, peak memory)."""
    cli = json.load(open(os.path.join(CLI_OUT, "result.json")))
    before = len(series_of(o, study))
    idle = rss_mib(o.proc.pid)
    peak = [idle]
    stop = threading.Event()

    def sample():
        while not stop.is_set():
            peak[0] = max(peak[0], rss_mib(o.proc.pid))
            time.sleep(0.05)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    t0 = time.time()
    try:
        ids = [o.post("/imhost/jobs", {"model": "perfusion-osvd", "study": study})["ID"] for _ in range(n)]
        states = [o.wait_job(i)["State"] for i in ids]
    finally:
        elapsed = time.time() - t0
        stop.set()
        sampler.join()
    check(states == ["Success"] * n, f"{n} jobs submitted at once all end Success ({sorted(set(states))})")
    results = [o.get(f"/imhost/jobs/{i}")["Result"] for i in ids]
    wrong = [i for i, r in enumerate(results)
             if any(not close(r["scores"].get(k, float("nan")), v) for k, v in cli["scores"].items())]
    check(not wrong, f"all {n} results have the command's scores (differ: {wrong})")
    series = [x["series"] for r in results for x in r["outputs"]]
    check(len(set(series)) == len(series), f"{len(series)} result series, each named by one job only")
    after = series_of(o, study)
    check(len(after) == before + len(series) and set(series) <= set(after),
          f"the study gained exactly those {len(series)} series: none lost, none duplicated")
    counts = [(x["instances"], len(o.get(f"/series/{x['series']}")["Instances"])) for r in results for x in r["outputs"]]
    check(all(a == b for a, b in counts), f"every result series holds the instances its job reported ({sum(b for _, b in counts)} in all)")
    growth = peak[0] - idle
    check(growth < 1536, f"Orthanc's memory stays bounded: peak {peak[0]:.0f} MiB resident, {growth:.0f} MiB above idle (< 1536)")
    print(f"load: {n} jobs in {elapsed:.1f} s = {60 * n / elapsed:.1f} jobs/min at 2 concurrent; "
          f"Orthanc resident {idle:.0f} MiB before, peak {peak[0]:.0f} MiB", flush=True)


def test_motion(o):
    """A moving study: the job corrects motion with the ITK the plugin links, as the command does."""
    # The phantoms share their study UID: name the moving series itself.
    series = o.upload_folder(MOVING, level="ParentSeries")
    check(len(series) == 1, f"the moving phantom is one series ({len(series)})")
    job_id, job, _ = run_job(o, {"model": "perfusion-osvd", "series": series[0]})
    check(job["State"] == "Success", f"the moving study's job ends Success: {job.get('ErrorDescription')}")
    result = o.get(f"/imhost/jobs/{job_id}")["Result"]
    cli = json.load(open(os.path.join(CLI_MOVING, "result.json")))
    motion, want = result.get("motion", {}), cli["report"]["motion"]
    check(str(motion.get("backend", "")).startswith("ITK") and motion.get("corrected") is True,
          f"motion corrected by ITK in the plugin ({motion.get('backend')}, corrected {motion.get('corrected')})")
    peak = max(want["estimated_mm"])
    check(abs(motion.get("max_estimated_mm", -1) - peak) <= 0.05,
          f"the largest motion estimated, {motion.get('max_estimated_mm', -1):.3f} mm, is the command's {peak:.3f} mm (± 0.05)")
    for name, value in cli["scores"].items():
        got = result["scores"].get(name, float("nan"))
        check(abs(got - value) <= 0.02 * max(1.0, abs(value)),
              f"moving study: {name} {got:.3f} equals the command's {value:.3f} (± 2 %)")


def test_restart(work, study_folder):
    """Orthanc stopped mid-job and started again: the job resumes (or fails); never half-stored."""
    o = Orthanc(os.path.join(work, "restart"), PLUGIN, imhost=dict(IMHOST_CONFIG, ConcurrentJobs=1))
    o.start()
    try:
        study = o.upload_folder(study_folder)[0]
        before = series_of(o, study)
        j = o.post("/imhost/jobs", {"model": "perfusion-nlr", "study": study})
        deadline = time.time() + 30
        while o.get(f"/jobs/{j['ID']}")["State"] != "Running" and time.time() < deadline:
            time.sleep(0.05)
        time.sleep(0.5)
        o.stop()
        o.start()
        try:
            job = o.wait_job(j["ID"], timeout=300)
            state = job["State"]
        except Exception:  # the job may be gone if Orthanc could not save it
            state = "gone"
        after = series_of(o, study)
        if state == "Success":
            n = len(o.get(f"/imhost/jobs/{j['ID']}")["Result"]["outputs"])
            check(len(after) == len(before) + n, f"restart mid-job: resumed and stored once ({n} series)")
        else:
            check(after == before, f"restart mid-job: {state}, nothing stored")
        check(state in ("Success", "Failure"), f"restart mid-job: the job is reported ({state})")
        # A job that ended before Orthanc stopped keeps reporting its results after the restart.
        done = o.post("/imhost/jobs", {"model": "perfusion-bsvd", "study": study})
        o.wait_job(done["ID"], timeout=120)
        outputs = o.get(f"/imhost/jobs/{done['ID']}").get("Result", {}).get("outputs")
        o.stop()
        o.start()
        again = o.get(f"/imhost/jobs/{done['ID']}")
        check(again.get("State") == "Success" and outputs and again.get("Result", {}).get("outputs") == outputs,
              f"a finished job reports the same results after a restart ({again.get('State')}, {len(outputs or [])} outputs)")
    finally:
        o.stop()


def test_auto_run(work, study_folder):
    config = dict(IMHOST_CONFIG, AutoRun={"Enable": True, "Model": "perfusion-bsvd", "SeriesDescription": "", "MinInstances": 20})
    o = Orthanc(os.path.join(work, "autorun"), PLUGIN, imhost=config)
    o.start()
    try:
        study = o.upload_folder(study_folder)[0]
        deadline = time.time() + 60
        jobs = []
        while time.time() < deadline:
            jobs = [o.get(f"/jobs/{i}") for i in o.get("/jobs")]
            jobs = [j for j in jobs if j["Type"] == "ImhostModel"]
            if jobs and all(j["State"] == "Success" for j in jobs):
                break
            time.sleep(0.5)
        check(len(jobs) == 1 and jobs[0]["State"] == "Success", f"a stable CT series starts one automatic run ({[j['State'] for j in jobs]})")
        time.sleep(4)  # the results become stable series too; they must not start runs
        jobs = [j for j in (o.get(f"/jobs/{i}") for i in o.get("/jobs")) if j["Type"] == "ImhostModel"]
        check(len(jobs) == 1, f"the stored results start no further run ({len(jobs)} job(s))")
        check(len(series_of(o, study)) > 1, "the automatic run stored its results in the study")
    finally:
        o.stop()


def main():
    o = Orthanc(os.path.join(WORK, "main"), PLUGIN, imhost=IMHOST_CONFIG)
    o.start()
    try:
        study = o.upload_folder(PHANTOM)[0]
        ct_study = o.upload_folder(CT_SLICE)[0]
        for test in [lambda: test_auth(o), lambda: test_models(o), lambda: test_requests(o, study)]:
            test()
        _, result = test_perfusion_job(o, study)
        test_read_back(o, result)
        test_bad_inputs(o, study, ct_study)
        test_cancel(o, study, ct_study)
        test_concurrent(o, study)
        test_motion(o)
    except Exception:
        traceback.print_exc()
        failures.append("an exception")
    finally:
        o.stop()
    for test in [lambda: test_restart(WORK, PHANTOM), lambda: test_auto_run(WORK, PHANTOM)]:
        try:
            test()
        except Exception:
            traceback.print_exc()
            failures.append("an exception")
    if failures:
        print(f"\n{len(failures)} check(s) failed; Orthanc's logs are under {WORK}", flush=True)
        sys.exit(1)
    print("\nall Orthanc plugin checks passed")


if __name__ == "__main__":
    main()
