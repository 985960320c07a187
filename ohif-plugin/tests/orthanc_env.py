"""A private Orthanc for the tests: configuration, start and stop, REST with credentials.

Run inside a private network namespace (run-tests.sh does): Orthanc 1.10 binds every interface.
"""

import base64
import io
import json
import os
import signal
import subprocess
import time
import urllib.error
import urllib.request
import zipfile

DICOMWEB_PLUGIN = "/usr/share/orthanc/plugins/libOrthancDicomWeb.so"


class Orthanc:
    def __init__(self, work, plugin, port=8042, imhost=None, auth=("imhost", "imhost-test"), extra=None):
        self.work = work
        self.port = port
        self.auth = auth
        self.proc = None
        os.makedirs(work, exist_ok=True)
        self.config_path = os.path.join(work, "orthanc.json")
        self.log_path = os.path.join(work, "orthanc.log")
        config = {
            "Name": "imhost-test",
            "StorageDirectory": os.path.join(work, "storage"),
            "IndexDirectory": os.path.join(work, "storage"),
            "HttpPort": port,
            "DicomServerEnabled": False,
            "RemoteAccessAllowed": False,
            "AuthenticationEnabled": auth is not None,
            "RegisteredUsers": {auth[0]: auth[1]} if auth else {},
            "ConcurrentJobs": 2,
            "StableAge": 2,
            "SaveJobs": True,
            "JobsHistorySize": 100,
            "HttpRequestTimeout": 60,
            "Plugins": [DICOMWEB_PLUGIN, plugin],
            "DicomWeb": {
                "Enable": True,
                "Root": "/dicom-web/",
                "EnableWado": True,
                "WadoRoot": "/wado",
                "StudiesMetadata": "Full",
                "SeriesMetadata": "Full",
            },
            "Imhost": imhost or {},
        }
        if extra:
            config.update(extra)
        with open(self.config_path, "w") as f:
            json.dump(config, f, indent=2)

    # --- process ---------------------------------------------------------------------------
    def start(self, timeout=30):
        log = open(self.log_path, "a")
        self.proc = subprocess.Popen(["Orthanc", "--verbose", self.config_path], stdout=log, stderr=subprocess.STDOUT)
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"Orthanc exited with {self.proc.returncode}; see {self.log_path}")
            try:
                self.get("/system")
                return self
            except (urllib.error.URLError, ConnectionError, OSError):
                time.sleep(0.1)
        raise RuntimeError(f"Orthanc did not answer within {timeout} s; see {self.log_path}")

    def stop(self, timeout=60):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def alive(self):
        return self.proc is not None and self.proc.poll() is None

    def log(self):
        with open(self.log_path, errors="replace") as f:
            return f.read()

    # --- REST ------------------------------------------------------------------------------
    def request(self, method, path, body=None, auth=True, content_type="application/json", raw=False):
        url = f"http://127.0.0.1:{self.port}{path}"
        data = body
        if body is not None and not isinstance(body, (bytes, bytearray)):
            data = json.dumps(body).encode()
        req = urllib.request.Request(url, data=data, method=method)
        if data is not None:
            req.add_header("Content-Type", content_type)
        if auth and self.auth:
            token = base64.b64encode(f"{self.auth[0]}:{self.auth[1]}".encode()).decode()
            req.add_header("Authorization", f"Basic {token}")
        with urllib.request.urlopen(req, timeout=120) as r:
            payload = r.read()
            if raw:
                return payload
            return json.loads(payload) if payload else None

    def status_of(self, method, path, body=None, auth=True):
        """The HTTP status code of a request (no exception for 4xx/5xx)."""
        try:
            self.request(method, path, body, auth=auth, raw=True)
            return 200
        except urllib.error.HTTPError as e:
            return e.code

    def get(self, path, **kw):
        return self.request("GET", path, **kw)

    def post(self, path, body=None, **kw):
        return self.request("POST", path, body, **kw)

    def upload_folder(self, folder, level="ParentStudy"):
        """POST every DICOM file of `folder` as one uncompressed ZIP; the Orthanc ids of the studies
        (or, with level="ParentSeries", of the series)."""
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as z:
            for root, _, files in os.walk(folder):
                for name in sorted(files):
                    if name.endswith(".dcm"):
                        z.write(os.path.join(root, name), name)
        answer = self.post("/instances", buf.getvalue(), content_type="application/zip")
        answers = answer if isinstance(answer, list) else [answer]
        return sorted({a[level] for a in answers})

    def wait_job(self, job_id, timeout=600, seen=None):
        """Poll /jobs/{id} until it leaves Pending/Running; record (progress, stage) seen."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            job = self.get(f"/jobs/{job_id}")
            if seen is not None:
                seen.append((job.get("Progress"), job.get("Content", {}).get("Stage")))
            if job["State"] not in ("Pending", "Running", "Paused"):
                return job
            time.sleep(0.1)
        raise TimeoutError(f"job {job_id} still {job['State']} after {timeout} s")
