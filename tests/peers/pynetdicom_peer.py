"""A third-party DICOM peer for tests/dicom_receiver.rs, built on pynetdicom.

    pynetdicom_peer.py MODE HOST PORT FILE...

MODE:
  store       C-STORE every file, then A-RELEASE
  abort-after-N   C-STORE the first N files, then A-ABORT (N an integer)
  empty-uid   C-STORE every file with its SOPInstanceUID emptied (as some exports carry),
              then A-RELEASE
  commit      C-STORE every file, then ask Storage Commitment (N-ACTION) for all of them and
              one instance never sent, wait for the N-EVENT-REPORT on the same association,
              then A-RELEASE; adds {"action_status", "event_type", "committed", "failed"}

Prints one JSON object: {"established": bool, "statuses": [int, ...]} (one status per C-STORE,
-1 when no response came).
"""

import json
import sys

import threading

from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid
from pynetdicom import AE, evt
from pynetdicom.sop_class import CTImageStorage, StorageCommitmentPushModel


def main() -> int:
    mode, host, port, files = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4:]
    ae = AE(ae_title="CT_SCANNER")
    ae.add_requested_context(CTImageStorage, ["1.2.840.10008.1.2.1", "1.2.840.10008.1.2"])
    ae.add_requested_context(StorageCommitmentPushModel)
    report = {}
    got = threading.Event()

    def on_report(event):
        info = event.event_information
        report["event_type"] = int(event.event_type)
        report["committed"] = [str(i.ReferencedSOPInstanceUID) for i in info.get("ReferencedSOPSequence", [])]
        report["failed"] = [str(i.ReferencedSOPInstanceUID) for i in info.get("FailedSOPSequence", [])]
        report["transaction"] = str(info.TransactionUID)
        got.set()
        return 0x0000, None

    assoc = ae.associate(host, port, ae_title="CTSENTINEL", evt_handlers=[(evt.EVT_N_EVENT_REPORT, on_report)])
    out = {"established": bool(assoc.is_established), "statuses": []}
    if not assoc.is_established:
        print(json.dumps(out))
        return 0
    limit = len(files)
    if mode.startswith("abort-after-"):
        limit = int(mode.rsplit("-", 1)[1])
    for f in files[:limit]:
        ds = dcmread(f)
        if mode == "empty-uid":
            ds.SOPInstanceUID = ""
        rsp = assoc.send_c_store(ds)
        out["statuses"].append(int(rsp.Status) if rsp and "Status" in rsp else -1)
    if mode == "commit":
        ask = Dataset()
        ask.TransactionUID = generate_uid()
        refs = []
        for f in files + ["never-sent"]:
            item = Dataset()
            item.ReferencedSOPClassUID = CTImageStorage
            item.ReferencedSOPInstanceUID = dcmread(f).SOPInstanceUID if f != "never-sent" else "1.2.3.999.1"
            refs.append(item)
        ask.ReferencedSOPSequence = refs
        status, _ = assoc.send_n_action(ask, 1, StorageCommitmentPushModel, "1.2.840.10008.1.20.1.1")
        out["action_status"] = int(status.Status) if status and "Status" in status else -1
        got.wait(30)
        out.update(report)
        out["transaction_matches"] = report.get("transaction") == str(ask.TransactionUID)
    if mode.startswith("abort-after-"):
        assoc.abort()
    else:
        assoc.release()
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
