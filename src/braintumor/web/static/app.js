// braintumor web page: every action goes through the JSON API under /api.
"use strict";

// RGB of each label: braintumor.report.LABEL_RGB (Okabe and Ito's colour-blind-safe
// palette; tests/test_colours.py checks the two agree)
const COLOURS = { 1: [213, 94, 0], 2: [86, 180, 233], 3: [240, 228, 66] };
const MOD_NAMES = { t1: "T1", t1ce: "T1ce", t2: "T2", flair: "FLAIR" };
const LABEL_NAMES = { 0: "no tumour label", 1: "necrotic core (NCR)", 2: "edema (ED)",
                      3: "enhancing tumour (ET)" };
const TERMINAL = ["done", "failed", "cancelled"];

const $ = (id) => document.getElementById(id);
const state = {
  info: null,
  job: null,
  files: [],            // File objects chosen for upload
  labelMap: null,       // ... the one of them named as a label map (<case>_seg.nii.gz)
  choice: 0,            // bumped by every drop and every choice of the file picker
  modality: "flair",    // background shown in the viewer
  nv: null,
  loadedBg: null,       // URL of the background volume in the viewer
  bgModality: null,     // its modality (t1, t1ce, t2, flair)
  loadedOverlay: null,  // URL of the label volume in the viewer
  loadedUnc: null,
  hidden: new Set(),
  opacity: 0.6,
  pollTimer: null,
  pendingClick: false,   // a primary-button press on the viewer, not yet released
  timeline: {},         // performance.now() stamps of the current job (for benchmarks)
  busy: false,
  sentJob: null,        // the job the chosen files were sent as, while it runs (Segment is off)
  started: null,        // the job started from this page (files or sample), until it ends
  centredJob: null,     // the job whose outline the crosshair was last brought to
  deleting: false,      // the job shown is being deleted from the page (its answer awaited)
  deleted: false,       // ... and was: the page is left for the upload form
};
window.braintumor = state;  // for tests and the curious

// -- API helpers ------------------------------------------------------------------------
// `timeoutMs`: the answer (its body too) must come within it, or the request is given up
// (aborted) and the error has `timedOut` set. No answer at all (the connection failed:
// fetch's TypeError) has `network` set; an answer said to be JSON that is not, `unreadable`
async function api(path, options = {}) {
  const { timeoutMs, ...rest } = options;
  const ctrl = timeoutMs ? new AbortController() : null;
  const timer = ctrl ? setTimeout(() => ctrl.abort(), timeoutMs) : null;
  let res = null;
  let body = null;
  let unreadable = false;
  try {
    res = await fetch(path, { credentials: "same-origin", ...rest, ...(ctrl ? { signal: ctrl.signal } : {}) });
    const type = res.headers.get("content-type") || "";
    if (type.includes("application/json")) {
      try {
        body = await res.json();
      } catch (e) {
        if (!(e instanceof SyntaxError)) throw e;
        unreadable = true;
      }
    }
  } catch (e) {
    if (ctrl && ctrl.signal.aborted) {
      const err = new Error(`The server did not answer within ${Math.round(timeoutMs / 1000)} s.`);
      err.timedOut = true;
      throw err;
    }
    if (e instanceof TypeError) e.network = true;
    throw e;
  } finally {
    clearTimeout(timer);
  }
  if (res.ok && unreadable) throw unreadableAnswer();
  if (!res.ok) {
    const detail = body && body.detail ? body.detail : `The server answered ${res.status}.`;
    const err = new Error(typeof detail === "string" ? detail : JSON.stringify(detail));
    err.status = res.status;
    // this server's own refusal (its JSON sentence), not a proxy's or another page's 404
    err.fromServer = !!(body && body.detail);
    err.body = body;
    throw err;
  }
  return body;
}
function unreadableAnswer() {
  const err = new Error("The server's answer could not be read.");
  err.unreadable = true;
  return err;
}
const postJSON = (path, obj, extra = {}) => api(path, {
  method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify(obj || {}),
  ...extra,
});

// a message: an error (red) by default, `true` for one of success (green), "info" for a
// plain fact that is neither (a correction that changed nothing)
function setMsg(id, text, ok = false) {
  const el = $(id);
  el.textContent = text || "";
  el.classList.toggle("ok", ok === true);
  el.classList.toggle("info", ok === "info");
}

// A control disabled while it has the keyboard's focus would drop it to the page's
// start: the focus goes to `to` (a message that says what happened, or a control still
// of use) instead
function disable(id, off, to) {
  const el = $(id);
  const had = off && document.activeElement === el;
  el.disabled = off;
  if (had && to) $(to).focus();
}

// -- start ------------------------------------------------------------------------------
// what the upload form says after a job was deleted from its page (/?deleted)
const DELETED_TEXT = "The job was deleted: its uploaded scans, outline, corrections and " +
  "reports are no longer on this server.";

async function init() {
  if (location.pathname === "/" && new URLSearchParams(location.search).has("deleted")) {
    // said where a job's state would be, at the top, above the upload form; the address
    // is the page's own again, so a reload is a fresh form
    history.replaceState({}, "", "/");
    $("job").hidden = false;
    $("job-state").hidden = true;
    $("job-what").textContent = "Job";
    $("job-case").textContent = "";
    setMsg("job-msg", DELETED_TEXT, true);
    document.title = "Job deleted · braintumor";
  }
  try {
    state.info = await api("/api/info");
  } catch (e) {
    uploadError(e.message);
    return;
  }
  const sel = $("method");
  for (const m of state.info.methods) {
    const o = document.createElement("option");
    o.value = m.name;
    o.textContent = m.label + (m.available ? "" : ` (${m.note || "not available"})`);
    o.disabled = !m.available;
    sel.appendChild(o);
  }
  if (state.info.default_method) sel.value = state.info.default_method;
  if (!state.info.default_method) {
    $("sample-btn").disabled = true;
    setMsg("upload-msg", "No segmentation method is available on this server.");
  }
  wireUi();
  const m = location.pathname.match(/^\/jobs\/([A-Za-z0-9_-]+)$/);
  if (m) openJob(m[1]);
}

function wireUi() {
  $("sample-btn").addEventListener("click", startSample);
  $("file-input").addEventListener("change", (e) => {
    state.choice += 1;
    chooseFiles([...e.target.files]);
  });
  const drop = $("drop");
  drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (e) => {
    e.preventDefault();
    drop.classList.remove("over");
    // a folder's files are read one by one (a CD's are many): files chosen or dropped
    // meanwhile are the user's last choice, and the folder's are passed over
    const choice = ++state.choice;
    droppedFiles(e.dataTransfer).then(({ files, folder }) => {
      if (choice === state.choice) chooseFiles(files, folder);
    });
  });
  drop.addEventListener("keydown", (e) => {
    if (e.key === "Enter" || e.key === " ") { e.preventDefault(); $("file-input").click(); }
  });
  $("submit-btn").addEventListener("click", submitUpload);
  // an option changed: the files may be sent again (or no longer can be)
  for (const ev of ["change", "input"]) {
    $("start").addEventListener(ev, (e) => {
      if (e.target.id !== "file-input" && state.files.length) checkSize();
    });
  }
  $("ref-input").addEventListener("change", labelMapKind);
  $("channels").addEventListener("change", () => {
    $("channels-custom").hidden = $("channels").value !== "custom";
  });
  for (const sel of document.querySelectorAll(".channel-select")) {
    for (const [k, v] of Object.entries(MOD_NAMES)) sel.appendChild(new Option(v, k));
  }
  ["flair", "t1", "t1ce", "t2"].forEach((m, i) => { document.querySelectorAll(".channel-select")[i].value = m; });
  $("cancel-btn").addEventListener("click", cancelJob);
  $("delete-btn").addEventListener("click", deleteJob);
  for (const id of ["dl-labels", "dl-report-pdf"]) $(id).addEventListener("click", checkedDownload);
  $("series-btn").addEventListener("click", confirmSeries);
  for (const b of document.querySelectorAll("#mod-btns button")) {
    b.addEventListener("click", () => switchModality(b.dataset.mod));
  }
  $("layout").addEventListener("change", applyLayout);
  $("convention").value = savedConvention();
  $("convention").addEventListener("change", applyConvention);
  for (const l of [1, 2, 3]) {
    $(`show-${l}`).addEventListener("change", (e) => {
      if (e.target.checked) state.hidden.delete(l); else state.hidden.add(l);
      applyLabelColours();
    });
  }
  $("opacity").addEventListener("input", (e) => {
    state.opacity = parseFloat(e.target.value);
    if (state.nv && state.loadedOverlay) state.nv.setDrawOpacity(state.opacity);
  });
  $("unc-toggle").addEventListener("change", refreshUncertainty);
  $("diam-toggle").addEventListener("change", refreshDiameters);
  $("seed-here-btn").addEventListener("click", () => {
    // the keyboard's way to correct: the seed goes where the crosshair is
    const nv = state.nv;
    if (nv) placeSeed(Array.from(nv.frac2mm(nv.scene.crosshairPos)).slice(0, 3));
  });
  for (const r of document.querySelectorAll("input[name=seed-kind]")) {
    r.addEventListener("change", seedKindShown);
  }
  $("correct-toggle").addEventListener("change", (e) => {
    $("seed-here-btn").disabled = !e.target.checked;
    $("correct-tools").classList.toggle("active", e.target.checked);
    setMsg("correct-msg", e.target.checked ? "Click on a slice to place a seed." : "", true);
  });
  $("undo-btn").addEventListener("click", undoCorrection);
  $("cmp-file").addEventListener("change", (e) => compareWith(e.target.files[0]));
  // a date typed after the file was chosen: the comparison again, with it
  for (const id of ["cmp-before-date", "cmp-after-date"]) {
    $(id).addEventListener("change", () => {
      const f = $("cmp-file").files[0];
      if (f) compareWith(f);
    });
  }
  for (const id of ["diam-et", "diam-wt"]) {
    $(id).addEventListener("click", (e) => { e.preventDefault(); showMeasuredSlice($(id).dataset.mm); });
  }
}

// the viewer's crosshair to where a lesion's diameters were measured (scanner mm)
async function showMeasuredSlice(mmText) {
  const nv = state.nv;
  if (!mmText || !nv || !nv.volumes.length) return;
  if (!$("diam-toggle").disabled && !$("diam-toggle").checked) {
    $("diam-toggle").checked = true;  // the lines are what the click is for
    await refreshDiameters();
  }
  moveCrosshair(mmText.split(",").map(Number));
  // one column (a phone, a zoomed-in window): the viewer lies above the measurements,
  // off the screen; it comes into view to show the slice
  if (NARROW.matches) $("centre").scrollIntoView({ block: "start" });
}

// the viewer's crosshair (and so its three slices) to scanner coordinates in mm
function moveCrosshair(mm) {
  const nv = state.nv;
  nv.scene.crosshairPos = nv.mm2frac(mm);
  nv.drawScene();
  nv.createOnLocationChange();
}

// -- upload -----------------------------------------------------------------------------
// what a chosen file is, from its name, or from its header for a DICOM file named
// without an extension (a CD's or PACS export's IM00000 ...; read by chooseFiles)
function kindOf(file) {
  const n = file.name.toLowerCase();
  if (n.endsWith(".nii") || n.endsWith(".nii.gz")) return "nifti";
  if (n.endsWith(".zip")) return "zip";
  if (/\.(png|jpe?g|tiff?|dcm|dicom)$/.test(n)) return "image";
  return DICOM_BY_HEADER.has(file) ? "image" : "other";
}

// a DICOM file: by its name, or by its header
function isDicom(file) {
  return /\.(dcm|dicom)$/i.test(file.name) || DICOM_BY_HEADER.has(file);
}

// the files of no known extension that are DICOM by their header, as the server tells
// them (braintumor.dicom.is_dicom_file): "DICM" after the 128-byte preamble, or a data
// set written without preamble (a file meta or identifying element first, little endian)
const DICOM_BY_HEADER = new WeakSet();
const DICOM_VRS = new Set(("AE AS AT CS DA DS DT FD FL IS LO LT OB OD OF OL OV OW PN SH SL SQ " +
                           "SS ST SV TM UC UI UL UN UR US UT UV").split(" "));

async function sniffDicom(file) {
  let head;
  try {
    head = new Uint8Array(await file.slice(0, 132).arrayBuffer());
  } catch (e) {
    return;  // unreadable: left "not supported"
  }
  const text = (a, b) => String.fromCharCode(...head.subarray(a, b));
  let dicom = head.length === 132 && text(128, 132) === "DICM";
  if (!dicom && head.length >= 8 && head[1] === 0 && (head[0] === 2 || head[0] === 8) &&
      head[2] + 256 * head[3] <= 0x1200) {
    const length = head[4] + 256 * head[5] + 65536 * head[6] + 16777216 * head[7];
    dicom = DICOM_VRS.has(text(4, 6)) || (length < 0x10000 && length % 2 === 0);
  }
  if (dicom) DICOM_BY_HEADER.add(file);
}

// the files dropped, those in a dropped folder (a study's, as a CD or PACS export holds
// it) and its subfolders among them; a folder's hidden files (.DS_Store) left out:
// { files, folder: whether a folder was dropped }
async function droppedFiles(dt) {
  // the entries are read at once: the drop's data is gone once its event is over
  const given = [...dt.files];
  const entries = [...(dt.items || [])].map((i) => (i.webkitGetAsEntry ? i.webkitGetAsEntry()
                                                                         : null));
  if (!entries.some((en) => en && en.isDirectory)) return { files: given, folder: false };
  const files = [];
  const walk = async (entry, inFolder) => {
    if (entry.isFile) {
      if (inFolder && entry.name.startsWith(".")) return;
      files.push(await new Promise((ok, no) => entry.file(ok, no)));
      return;
    }
    const reader = entry.createReader();
    for (;;) {  // a folder's entries come in batches (of 100 in Chromium) until none is left
      const batch = await new Promise((ok, no) => reader.readEntries(ok, no));
      if (!batch.length) break;
      for (const en of batch) await walk(en, true);
    }
  };
  try {
    for (const en of entries) if (en) await walk(en, false);
  } catch (e) {
    return { files: given, folder: false };  // a folder that cannot be read: what the browser gave
  }
  return { files, folder: true };
}

// a label map's name in a case's folder, BraTS's <case>_seg.nii.gz (2017-2021) or
// -seg.nii.gz (2023), as the server knows it in a zip (inputs._SEG_NAME)
const SEG_NAME = /(^|[_\-. ])seg(mentation)?\.nii(\.gz)?$/i;
// the files a system adds to a folder (braintumor.io.SYSTEM_FILES)
const SYSTEM_FILE = /^(thumbs\.db|desktop\.ini)$/i;

// what the label map among the files chosen is, said in the list: the reference, unless
// one is chosen on its own (which is sent instead; Segment is then checked again by the
// form's change listener)
function labelMapKind() {
  const cell = document.querySelector("#file-list .label-map");
  if (cell) {
    cell.textContent = $("ref-input").files[0]
      ? "label map (not sent: the reference label map chosen below is)" : "reference label map";
  }
}

function humanSize(n) {
  if (n >= 1073741824) return `${(n / 1073741824).toFixed(1)} GiB`;
  if (n >= 1048576) return `${(n / 1048576).toFixed(1)} MiB`;
  return `${Math.max(1, Math.round(n / 1024))} KiB`;
}

// the upload's size against the server's limit (/api/info), so that a case over it is
// refused before it is sent rather than after (the server reads all of it first): the
// sentence why, or "" when it fits
function sizeProblem() {
  const limit = state.info && state.info.max_upload_bytes;
  const ref = $("ref-input").files[0];
  const total = sentFiles().reduce((n, f) => n + f.size, 0) + (ref || state.labelMap || { size: 0 }).size;
  if (!limit || total <= limit) return "";
  return `The files come to ${humanSize(total)}, over this server's upload limit of ` +
    `${humanSize(limit)}; they cannot be sent.`;
}

// the channel order of a lone 4D file as the upload's channels field sends it: "" when
// the Decathlon's (the server's default, checked against the images) or no 4D file,
// null when the four channels chosen one by one do not name each modality once
function channelsValue() {
  if ($("channels-box").hidden) return "";
  const v = $("channels").value;
  if (v !== "custom") return v;
  const mods = [...document.querySelectorAll(".channel-select")].map((s) => s.value);
  return new Set(mods).size === 4 && mods.every(Boolean) ? mods.join(",") : null;
}

// what the form would send, files and options: the same again is the same job again
function formSignature() {
  const ref = $("ref-input").files[0];
  const mods = [...document.querySelectorAll(".mod-select")].map((s) => s.value);
  return JSON.stringify([$("method").value, $("want-unc").checked, $("want-accurate").checked,
    $("want-align").checked, $("want-bias").checked, $("pixel-mm").value.trim(), channelsValue(),
    mods, ref ? [ref.name, ref.size, ref.lastModified] : null]);
}

// the files chosen that are sent as the case's ("files"): all but a label map among them
function sentFiles() {
  return state.files.filter((f) => f !== state.labelMap);
}

// what a kind of file is called in a sentence
function kindName(f) {
  return { nifti: "NIfTI", zip: "zip", image: isDicom(f) ? "DICOM" : "pictures" }[kindOf(f)];
}

// why Segment cannot run the files chosen (said beside it), or "": a file of a kind the
// page does not take, files of several kinds, more than one zip or label map, more NIfTI
// images than a case has, files of no modality or of one modality twice, a channel order
// naming a modality twice, or files already sent
// with these very options (Segment again would run the same job a second time)
function submitProblem() {
  if (!state.files.length) return "";
  const other = state.files.find((f) => kindOf(f) === "other");
  if (other) {
    return `Segment is off: ${other.name} is not a file this page takes (NIfTI, a zip, PNG, ` +
      "JPEG, TIFF or DICOM); choose other files.";
  }
  const kinds = [...new Set(state.files.map(kindName))];
  if (kinds.length > 1 && (kinds.includes("NIfTI") || kinds.includes("zip"))) {
    return `Segment is off: the files mix kinds (${andList(kinds)}); send four NIfTI files, ` +
      "one per modality, one 4D NIfTI, one zip, a DICOM study's files or 2D pictures, " +
      "each kind on its own.";
  }
  const zips = state.files.filter((f) => kindOf(f) === "zip");
  if (zips.length > 1) return `Segment is off: ${zips.length} zips are chosen; send one at a time.`;
  const niftis = state.files.filter((f) => kindOf(f) === "nifti");
  const maps = niftis.filter((f) => SEG_NAME.test(f.name));
  if (niftis.length > 2 && maps.length > 1) {
    return `Segment is off: ${andList(maps.map((f) => f.name))} are all named as label ` +
      "maps; a case has one (choose another as the reference label map).";
  }
  const images = niftis.filter((f) => f !== state.labelMap);
  if (images.length > 4) {
    return `Segment is off: ${images.length} NIfTI images are chosen; send four NIfTI files, ` +
      "one per modality (T1, T1ce, T2, FLAIR; the T1 or T2 may be left out), or one 4D file.";
  }
  // the modality of each file, as chosen in the list (or guessed from its name): one not
  // chosen, one chosen twice, or T1ce or FLAIR left out would be refused by the server,
  // and only once every file had been sent
  const sels = [...document.querySelectorAll(".mod-select")];
  const unset = sels.filter((sel) => !sel.value).map((sel) => sel.dataset.name);
  if (unset.length) {
    return `Segment is off: choose the modality of ${andList(unset)} (T1, T1ce, T2 or FLAIR).`;
  }
  const byMod = {};
  for (const sel of sels) (byMod[sel.value] = byMod[sel.value] || []).push(sel.dataset.name);
  const twice = Object.keys(MOD_NAMES).find((m) => (byMod[m] || []).length > 1);
  if (twice) {
    const same = byMod[twice];
    return `Segment is off: ${andList(same)} are ${same.length > 2 ? "all" : "both"} ` +
      `${MOD_NAMES[twice]}; choose each modality once.`;
  }
  const lacking = sels.length ? ["t1ce", "flair"].filter((m) => !byMod[m]).map((m) => MOD_NAMES[m])
    : [];
  if (lacking.length) {
    return `Segment is off: no file is ${lacking.join(" or ")}; T1ce and FLAIR are needed ` +
      "(T1 or T2 may be left out).";
  }
  if (channelsValue() === null) {
    return "Segment is off: name each of T1, T1ce, T2 and FLAIR once in the channel order.";
  }
  if (state.sent && state.sent.files === state.files && state.sent.sig === formSignature()) {
    return "Segment is off: these files were sent with these options (the job shown); " +
      "change a file or an option to segment them again.";
  }
  return "";
}

// "a", "a and b", "a, b and c"
function andList(items) {
  if (items.length < 2) return items.join("");
  return `${items.slice(0, -1).join(", ")} and ${items[items.length - 1]}`;
}

// Segment on when files are chosen, can run, fit the limit and are not running as a job
// already; the reason it is off said beside it
function checkSize() {
  const problem = sizeProblem();
  if (problem) uploadError(problem);
  else if ($("upload-err").textContent.startsWith("The files come to ")) setMsg("upload-err", "");
  const why = problem ? "" : submitProblem();
  if ($("submit-why").textContent !== why) setMsg("submit-why", why, "info");
  // files still being looked at (headers read, modalities guessed) are not judged yet,
  // whatever an option changed meanwhile asks
  const looking = !!state.looking;
  disable("submit-btn", !!problem || !!why || !state.files.length || !!state.sentJob ||
          !!state.uploading || looking, "submit-why");
  return !problem && !why && !looking;
}

// The dimensions of a NIfTI file from its header (NIfTI-1 or -2, either byte order,
// gzipped or not), read in the browser: [ndim, nx, ny, nz, nt, ...], or null when it
// cannot be read (not a NIfTI, or a browser without DecompressionStream)
async function niftiDims(file) {
  try {
    let stream = file.stream();
    if (file.name.toLowerCase().endsWith(".gz")) stream = stream.pipeThrough(new DecompressionStream("gzip"));
    const reader = stream.getReader();
    const chunks = [];
    let have = 0;
    while (have < 540) {
      const { done, value } = await reader.read();
      if (done) break;
      chunks.push(value);
      have += value.length;
    }
    reader.cancel().catch(() => {});
    const head = new Uint8Array(have);
    let at = 0;
    for (const c of chunks) { head.set(c, at); at += c.length; }
    const view = new DataView(head.buffer);
    if (have < 348) return null;
    for (const little of [true, false]) {
      const size = view.getInt32(0, little);
      if (size === 348) return Array.from({ length: 8 }, (_, i) => view.getInt16(40 + 2 * i, little));
      if (size === 540 && have >= 80) {
        return Array.from({ length: 8 }, (_, i) => Number(view.getBigInt64(16 + 8 * i, little)));
      }
    }
    return null;
  } catch (e) {
    return null;
  }
}

// what a lone NIfTI file is, from its header when it can be read: the four modalities
// in one 4D file, or one 3D image (one modality), or unknown
async function loneNiftiKind(file) {
  const dims = await niftiDims(file);
  if (!dims || dims[0] < 1 || dims[0] > 7) return "NIfTI: a 4D case or one modality";
  const volumes = dims[0] >= 4 ? Math.max(1, dims[4]) : 1;
  if (volumes === 4) return "4D (all four)";
  if (volumes === 1) return "one 3D image (one modality; the case needs all four)";
  return `4D of ${volumes} volumes (a case has 4)`;
}

// the files chosen (picked, or dropped; `folder`: found in a dropped folder, whose files
// other than a study's DICOM files, or the files a system adds, are left out and said)
async function chooseFiles(files, folder = false) {
  setMsg("upload-msg", "");
  setMsg("upload-err", "");
  setMsg("files-note", "", "info");
  // numbered slices in their order (pat_2 before pat_10), as the server stacks them
  files = [...files].sort((a, b) => a.name.localeCompare(b.name, undefined, { numeric: true }));
  state.files = files;
  state.labelMap = null;
  state.looking = files.length > 0;
  const body = $("file-list").querySelector("tbody");
  body.textContent = "";
  if (!files.length) {
    $("file-list").hidden = true;
    $("channels-box").hidden = true;
    checkSize();
    return;
  }
  let guesses = {};
  // off while the files are looked at (their headers read), on again by checkSize
  disable("submit-btn", true);
  // a file of no known extension may be DICOM all the same (its header says)
  await Promise.all(files.filter((f) => kindOf(f) === "other").map(sniffDicom));
  if (state.files !== files) return;  // other files were chosen meanwhile
  if (folder) {
    // a CD's or PACS export's study folder holds other files beside its DICOM files
    // (JPEG previews, a viewer's Thumbs.db, autorun.inf, README.TXT), which the user
    // cannot take out of a folder dropped whole
    const study = files.some(isDicom) && !files.some((f) => ["nifti", "zip"].includes(kindOf(f)));
    const left = files.filter(study ? (f) => !isDicom(f) : (f) => SYSTEM_FILE.test(f.name));
    if (left.length) {
      files = files.filter((f) => !left.includes(f));
      state.files = files;
      const shown = left.slice(0, 4).map((f) => f.name).join(", ") +
        (left.length > 4 ? ` and ${left.length - 4} more` : "");
      const n = left.length;
      setMsg("files-note", `${n} file${n > 1 ? "s" : ""} of the folder that ${n > 1 ? "are" : "is"} ` +
        `not ${study ? "DICOM" : "a scan"} ${n > 1 ? "were" : "was"} left out: ${shown}.`, "info");
    }
  }
  // a label map among a case's NIfTI files (a BraTS folder's <case>_seg.nii.gz): the
  // reference, as the server takes it from a zip of the same folder
  const niftis = files.every((f) => kindOf(f) === "nifti");
  const maps = niftis ? files.filter((f) => SEG_NAME.test(f.name)) : [];
  if (maps.length === 1 && files.length > 1) state.labelMap = maps[0];
  const images = files.filter((f) => f !== state.labelMap);
  const names = images.map((f) => f.name);
  if (niftis && images.length > 1) {
    try { guesses = (await postJSON("/api/detect-modalities", { names })).modalities; } catch (e) { /* keep empty */ }
  }
  const lone = images.length === 1 && kindOf(images[0]) === "nifti" ? await loneNiftiKind(images[0]) : "";
  if (state.files !== files) return;  // other files were chosen meanwhile
  for (const f of files) {
    const tr = document.createElement("tr");
    const td1 = document.createElement("td");
    td1.textContent = `${f.name} (${humanSize(f.size)})`;
    const td2 = document.createElement("td");
    const kind = kindOf(f);
    if (f === state.labelMap) {
      td2.className = "label-map";
    } else if (kind === "nifti" && images.length > 1) {
      const sel = document.createElement("select");
      sel.dataset.name = f.name;
      sel.className = "mod-select";
      sel.setAttribute("aria-label", `Modality of ${f.name}`);
      sel.appendChild(new Option("?", ""));
      for (const [k, v] of Object.entries(MOD_NAMES)) sel.appendChild(new Option(v, k));
      sel.value = guesses[f.name] || "";
      td2.appendChild(sel);
    } else {
      td2.textContent = { nifti: lone, zip: "zip archive", image: files.length < 2 ? "2D picture" : (isDicom(f) ? "DICOM (series or slices)" : (/_mask$/i.test(f.name.replace(/\.[^.]+$/, "")) ? "mask (reference)" : "2D slice")), other: "not supported" }[kind];
    }
    tr.append(td1, td2);
    body.appendChild(tr);
  }
  $("file-list").hidden = false;
  labelMapKind();
  // a lone 4D file (or one whose header could not be read): the order of its channels
  $("channels-box").hidden = !(lone && !lone.startsWith("one 3D"));
  state.sentJob = null;  // new files: a new job
  state.looking = false;
  checkSize();
}

function submitUpload() {
  if (!state.files.length || !checkSize()) return;
  const form = new FormData();
  for (const f of sentFiles()) form.append("files", f, f.name);
  const mods = {};
  for (const sel of document.querySelectorAll(".mod-select")) if (sel.value) mods[sel.dataset.name] = sel.value;
  if (Object.keys(mods).length) form.append("modalities", JSON.stringify(mods));
  // the reference label map chosen on its own, else the one among the files
  const ref = $("ref-input").files[0] || state.labelMap;
  if (ref) form.append("reference", ref, ref.name);
  form.append("method", $("method").value);
  if ($("want-unc").checked) form.append("uncertainty", "true");
  if ($("want-accurate").checked) form.append("accurate", "true");
  if ($("want-align").checked) form.append("align", "true");
  if ($("want-bias").checked) form.append("bias_correct", "true");
  if (channelsValue()) form.append("channels", channelsValue());
  const px = $("pixel-mm").value.trim();
  if (px && state.files.every((f) => kindOf(f) === "image")) form.append("pixel_mm", px);
  if ((state.files.length === 1 && kindOf(state.files[0]) === "zip")
      || (state.files.length > 1 && state.files.some(isDicom)
          && state.files.every((f) => kindOf(f) === "image"))) form.append("confirm_series", "true");
  setMsg("upload-err", "");
  setMsg("upload-msg", "Uploading…", true);
  state.uploadStep = 0;
  // Segment is off while the files go: the focus goes to the line that says how far
  disable("submit-btn", true, "upload-msg");
  // XMLHttpRequest (not fetch) to show upload progress
  const xhr = new XMLHttpRequest();
  xhr.open("POST", "/api/jobs");
  state.timeline = {};
  mark("upload_start");
  xhr.upload.onload = () => mark("upload_sent");
  xhr.upload.onprogress = (e) => { if (e.lengthComputable) uploadProgress(e.loaded, e.total); };
  state.uploading = true;
  xhr.onloadend = () => { state.uploading = false; };
  xhr.onload = () => {
    state.uploading = false;
    let body = null;
    try { body = JSON.parse(xhr.responseText); } catch (e) { body = null; }
    if (xhr.status >= 200 && xhr.status < 300 && body) {
      setMsg("upload-msg", "Uploaded.", true);
      // Segment stays off while the job runs: a second press would send the case again
      // (it comes back when the job ends, or with other files)
      state.sentJob = body.id;
      state.started = body.id;
      // the same files with the same options would be the same job: Segment stays off for
      // them until a file or an option changes (or this job fails or is cancelled)
      state.sent = { id: body.id, files: state.files, sig: formSignature() };
      showJob(body, true);
      // the job's state, at the top of the panel, takes the focus (and so comes into
      // view when the list of files has pushed it off the screen)
      $("job-status-line").focus();
    } else {
      $("submit-btn").disabled = false;
      uploadError((body && body.detail) || `The upload failed (${xhr.status}).`);
    }
  };
  xhr.onerror = () => { state.uploading = false; $("submit-btn").disabled = false; uploadError("The upload failed: the server could not be reached."); };
  xhr.send(form);
}

// why an upload was refused, under the Segment button: scrolled into view (on a phone the
// button is at the bottom of the screen and its message below it)
function uploadError(text) {
  setMsg("upload-msg", "");
  setMsg("upload-err", text);
  $("upload-err").scrollIntoView({ block: "nearest" });
  // Segment was off while the files went, and the focus on the line saying so: it goes
  // to the sentence why, a step before Segment, so that it is read and Segment is next
  if (document.activeElement === $("upload-msg") || document.activeElement === document.body) {
    $("upload-err").focus();
  }
}

// how far the upload is, in whole tenths: a status rewritten at every progress event
// (many a second) would be read out without end
function uploadProgress(loaded, total) {
  const step = Math.floor((10 * loaded) / total);
  if (step === state.uploadStep) return;
  state.uploadStep = step;
  setMsg("upload-msg", `Uploading… ${10 * step} %`, true);
}

function mark(name) {
  if (state.timeline[name] === undefined) state.timeline[name] = performance.now();
}

async function startSample() {
  state.timeline = {};
  mark("click");
  $("sample-btn").disabled = true;
  setMsg("upload-msg", "");
  setMsg("upload-err", "");
  try {
    const job = await postJSON("/api/sample", { method: $("method").value || null,
                                                uncertainty: $("want-unc").checked,
                                                accurate: $("want-accurate").checked });
    state.started = job.id;
    showJob(job, true);
    // the button is disabled meanwhile, which would drop focus to the page: the job's
    // status takes it (and is scrolled into view on a narrow screen)
    $("job-status-line").focus();
  } catch (e) {
    uploadError(e.message);
  } finally {
    $("sample-btn").disabled = false;
  }
}

// -- jobs -------------------------------------------------------------------------------
async function openJob(id) {
  let job;
  try {
    job = await api(`/api/jobs/${id}`);
  } catch (e) {
    // an unknown or expired job: its sentence where the job's state would be, at the top,
    // above the upload form (left for a new case)
    $("job").hidden = false;
    $("job-state").hidden = true;
    $("job-what").textContent = "Job";
    $("job-case").textContent = "";
    setMsg("job-msg", e.message);
    document.title = "No such job · braintumor";
    return;
  }
  // the page of one job (a shared link, a reload): its case and state, then the viewer;
  // the empty upload form gives way to a link to start another case
  $("start").hidden = true;
  $("start-again").hidden = false;
  $("job").classList.add("only");
  showJob(job, false);
}

// whose scan a job is: the case's name as the downloads and reports give it (a DICOM
// study's, which has none of its own, by the name of what was uploaded)
function caseName(job) {
  const inputs = job.inputs || {};
  const files = inputs.files || [];
  if (inputs.source === "dicom" && files.length) {
    return files.length === 1 ? files[0] : `${files.length} DICOM files`;
  }
  if (inputs.case_id) return inputs.case_id;
  return inputs.source === "sample" ? "sample case" : (files[0] || "");
}

function showJob(job, push) {
  const fresh = !state.job || state.job.id !== job.id;
  if (state.gone && !fresh) return;  // deleted meanwhile: an answer sent before stays unshown
  if (fresh) {
    // what this page followed or did on the job it leaves is no concern of this one
    endLate(state.late);
    state.own = new Map();
    setMsg("correct-msg", "");  // it spoke of the job left
    state.gone = false;
    $("gone-msg").hidden = true;
    setMsg("delete-msg", "");
  }
  mark("job_seen");
  if (job.urls.overlay) mark("outline_seen");
  if (fresh) resetResultPanels();
  state.job = job;
  if (push && location.pathname !== job.urls.page) history.pushState({}, "", job.urls.page);
  render(job);
  clearTimeout(state.pollTimer);
  const summary = job.result && job.result.summary;
  const measuring = job.status === "done" && summary && summary.lesion_count === null &&
    !summary.measure_failed;
  if ((!TERMINAL.includes(job.status) && job.status !== "awaiting_input") || measuring) {
    state.pollTimer = setTimeout(poll, 400);
  }
}

async function poll() {
  if (!state.job || state.gone || state.deleting) return;
  try {
    const job = await api(`/api/jobs/${state.job.id}`);
    showJob(job, false);
  } catch (e) {
    setMsg("job-msg", e.message);
    if (e.status === 404 && e.fromServer) jobGone(e.message);  // deleted or expired: nothing more will come
    else state.pollTimer = setTimeout(poll, 2000);
  }
}

// The job as the server has it now, redrawn (its corrections count, Undo, the outline):
// another tab on the same job may have corrected or undone since. Returns whether its
// outline changed (null: no answer within `timeoutMs`, or none at all); a job gone since
// says so.
async function refreshJob(timeoutMs) {
  const job = state.job;
  if (!job || state.gone || state.deleting) return false;
  try {
    const now = await api(`/api/jobs/${job.id}`, { timeoutMs });
    if (!state.job || state.job.id !== now.id) return false;
    showJob(now, false);
    return revisionOf(now) !== revisionOf(job);
  } catch (e) {
    if (e.status === 404 && e.fromServer) jobGone(e.message);
    return e.status ? false : null;
  }
}

// back to this tab (or window): what another tab did to the job meanwhile is shown
let lastRefresh = 0;
function refreshOnReturn() {
  if (document.visibilityState !== "visible" || !state.job || performance.now() - lastRefresh < 1000) return;
  lastRefresh = performance.now();
  refreshJob();
}
document.addEventListener("visibilitychange", refreshOnReturn);
window.addEventListener("focus", refreshOnReturn);

// the job was deleted or expired while its page was open: its sentence stays, said where
// the reader is looking (a notice held in view at the top of the window, as well as in
// the job's panel), and nothing offers to act on it any more
function jobGone(message) {
  if (state.deleting) return;  // deleted from this page: its own answer says what follows
  state.gone = true;
  clearTimeout(state.pollTimer);
  // the files it was sent as may be sent again: its job is no more
  state.sentJob = null;
  state.sent = null;
  checkSize();
  if (message) {
    setMsg("job-msg", message);
    $("gone-text").textContent = message;
    $("gone-msg").hidden = false;
  }
  $("correct-toggle").checked = false;
  $("correct-tools").classList.remove("active");
  for (const id of ["correct-toggle", "seed-here-btn", "undo-btn"]) $(id).disabled = true;
  $("cancel-btn").hidden = true;
  $("delete-btn").hidden = true;
  for (const id of ["dl-labels", "dl-report-html", "dl-report-pdf"]) {
    $(id).classList.add("disabled");
    $(id).removeAttribute("href");
    $(id).setAttribute("aria-disabled", "true");
  }
}

// a download asks first whether the job is still there, so a job gone since shows its
// sentence here instead of replacing the page with the server's answer
async function checkedDownload(ev) {
  const a = ev.currentTarget;
  if (!a.href) return;
  ev.preventDefault();
  const url = a.href;
  let res = null;
  try {
    res = await fetch(url, { method: "HEAD", credentials: "same-origin" });
  } catch (e) {
    setMsg("job-msg", `The server could not be reached (${e.message}).`);
    return;
  }
  if (!res.ok) {
    let why = "";
    let ours = false;
    try { await api(url); } catch (e) { why = e.message; ours = !!e.fromServer; setMsg("job-msg", why); }  // its sentence
    if (res.status === 404 && ours) jobGone(why);
    return;
  }
  window.location.href = url;
}

async function cancelJob() {
  if (!state.job) return;
  try { showJob(await postJSON(`/api/jobs/${state.job.id}/cancel`), false); } catch (e) { setMsg("job-msg", e.message); }
}

// Delete job: the job and its files off this server now, rather than when it expires
// (a job still running is stopped first). Asked first, saying what goes and what does
// not. Done, the page leaves the job's address for a fresh upload form that says so
// (nothing of the job left on the screen, nothing polled); refused, the server's sentence
// is said under the button and the job stays as it was; a job gone already says so.
async function deleteJob() {
  const job = state.job;
  if (!job || state.gone || state.deleting) return;
  const name = caseName(job);
  const stopped = job.status === "running";
  const ask = `Delete this job${name ? ` (${name})` : ""} from this server now? ` +
    `${stopped ? "It is stopped, and its" : "Its"} uploaded scans, outline, corrections and ` +
    "reports on this server are deleted for good; files already downloaded are not affected.";
  if (!window.confirm(ask)) return;
  const btn = $("delete-btn");
  state.deleting = true;
  clearTimeout(state.pollTimer);
  setMsg("delete-msg", "");
  // not disabled, which would drop the keyboard's focus: marked busy, pressed in vain
  btn.setAttribute("aria-disabled", "true");
  btn.textContent = "Deleting…";
  try {
    await api(job.urls.self, { method: "DELETE" });
  } catch (e) {
    state.deleting = false;
    btn.removeAttribute("aria-disabled");
    btn.textContent = "Delete job";
    if (e.status === 404 && e.fromServer) {
      jobGone(e.message);  // expired, or deleted elsewhere: gone already
      return;
    }
    setMsg("delete-msg", e.status ? e.message
      : `The job could not be deleted: the server could not be reached (${e.message}).`);
    // kept: shown as it is now (a running job may have been stopped) and followed again,
    // by the poll, which keeps trying while the server cannot be reached
    poll();
    return;
  }
  state.deleted = true;
  location.replace("/?deleted");
}

// a page left after its job was deleted, shown again from the browser's back-forward
// cache: loaded afresh, so that nothing of the job is shown again
window.addEventListener("pageshow", (e) => { if (e.persisted && state.deleted) location.reload(); });

// the page in one column (style.css's narrow layout): the viewer lies below the panels
const NARROW = window.matchMedia("(max-width: 1100px)");

function render(job) {
  $("job").hidden = false;
  $("job-state").hidden = false;
  const name = caseName(job);
  $("job-what").textContent = name ? "Case" : "Job";
  $("job-case").textContent = name;
  document.body.dataset.status = job.status;
  const st = $("job-status");
  st.textContent = job.status.replace("_", " ");
  st.className = `badge ${job.status}`;
  let stage = job.stage || "";
  if (job.status === "queued" && job.queue_position) stage = `${job.queue_position} job(s) ahead`;
  $("job-stage").textContent = stage === st.textContent ? "" : stage;
  // a job stopped part way has no progress left to show: the badge says what happened
  $("job-progress").hidden = job.status === "cancelled" || job.status === "failed";
  $("job-progress").value = job.progress;
  $("job-progress").setAttribute("aria-valuetext",
    `${Math.round(100 * job.progress)} %${stage ? `, ${stage}` : ""}`);
  // a shared link's tab says whose scan it is, then how far its job is
  document.title = `${name ? `${name} · ` : ""}${st.textContent} · braintumor`;
  // a job that stops takes Cancel away: the focus goes to the line that says it stopped
  $("cancel-btn").hidden = false;
  $("delete-btn").hidden = false;
  disable("cancel-btn", TERMINAL.includes(job.status) || job.stage === "cancelling",
          "job-status-line");
  if (state.started === job.id && TERMINAL.includes(job.status)) {
    state.started = null;
    // one column (a phone, a narrow window): the job started from this page has its
    // result, which lies below the upload form; the viewer comes into view
    if (job.status === "done" && NARROW.matches) $("centre").scrollIntoView({ block: "start" });
  }
  if (state.sent && state.sent.id === job.id && (job.status === "failed" || job.status === "cancelled")) {
    state.sent = null;  // it did not run to its end: the same files may be sent again
  }
  if (state.sentJob && (state.sentJob !== job.id || TERMINAL.includes(job.status))) {
    // done, failed or cancelled (or another job shown): the files may be sent again,
    // unless they were segmented with these options already
    state.sentJob = null;
    checkSize();
  }
  $("job-link").href = job.urls.page;
  setMsg("job-msg", job.status === "failed" || job.status === "cancelled" ? job.message : "");
  renderSeries(job);
  const r = job.result || {};
  // a 4D file whose channels do not look like the order taken: said on its own, at the
  // head of the measurements, from the upload on (the outline may be wrong throughout)
  const channels = (job.inputs && job.inputs.channel_warning) || "";
  $("m-channels").hidden = !channels;
  const channelText = channels ? `Warning: ${channels}.` : "";
  if ($("m-channels").textContent !== channelText) {  // an alert: said once, not per poll
    $("m-channels").textContent = channelText;
  }
  // what the method found odd about the input (a picture that is not an MRI slice, a
  // scan that is not skull-stripped): said next to the result, never hidden
  const warning = channels
    ? (r.warning || "").replace(`${channels}; `, "").replace(`; ${channels}`, "").replace(channels, "")
    : (r.warning || "");
  $("m-warn").hidden = !warning;
  // what the method said of its own outline (a volume it found): once corrected, said
  // as said of the outline before (what was said of the scan still holds)
  $("m-warn").textContent = warning
    ? `Note: ${saidBefore(warning, r.method_warning, r.kind === "3d" ? r.corrections : 0)}`
    : "";
  if (r.kind === "2d" && job.status === "done") { show2d(job); return; }
  if (job.urls.images) loadViewer(job);
  if (job.result && job.result.summary) renderResult(job);
}

// ``warning`` after ``corrections`` corrections: the method's own part (``own``) marked
// as said of the outline before them, as the reports say it (web/report.py said_before)
function saidBefore(warning, own, corrections) {
  if (!warning || !corrections || !own) return warning;
  const core = own.replace(/\.+$/, "");
  const at = warning.indexOf(core);
  if (at < 0) return warning;
  const mark = at === 0 ? "Before the corrections: " : "before the corrections: ";
  return warning.slice(0, at) + mark + warning.slice(at);
}

function resetResultPanels() {
  $("vol-table").querySelector("tbody").textContent = "";
  $("metrics-box").hidden = true;
  $("lesion-count").textContent = "-";
  $("m-method").textContent = "-";
  $("m-model").textContent = "-";
  $("m-corr").textContent = "0";
  $("m-corr-line").hidden = false;
  $("dl-labels").textContent = "Label map (NIfTI)";
  $("vol-h1").textContent = "Region";
  $("vol-h2").textContent = "mL";
  $("lesion-line").hidden = false;
  for (const id of ["dl-labels", "dl-report-html", "dl-report-pdf"]) {
    $(id).classList.add("disabled");
    $(id).removeAttribute("href");
    $(id).setAttribute("aria-disabled", "true");
  }
  $("correct-toggle").disabled = true;
  $("seed-here-btn").disabled = true;
  $("undo-btn").disabled = true;
  $("img2d").hidden = true;
  $("slice2d-nav").hidden = true;
  $("followup").hidden = true;
  $("cmp-table").hidden = true;
  $("cmp-caveat").hidden = true;
  $("cmp-warn").hidden = true;
  $("cmp-file").value = "";
  // another job: its own dates (a DICOM study's is known; a NIfTI case's is not)
  $("cmp-before-date").value = "";
  $("cmp-after-date").value = "";
  setMsg("cmp-msg", "");
  state.cmpVersion = undefined;
  state.loadedOverlay = null;
  state.loadedUnc = null;
  state.loadedDiam = null;
  $("diam-toggle").disabled = true;
}

// -- DICOM series ------------------------------------------------------------------------
const PLACEHOLDER = "Start with the sample case or upload an MRI case.";

function renderSeries(job) {
  const box = $("series-box");
  const series = (job.inputs && job.inputs.series) || [];
  const waiting = job.status === "awaiting_input" && series.length > 0;
  $("placeholder").textContent = waiting
    ? "Check the modality of each DICOM series (left), then press Start segmentation."
    : PLACEHOLDER;
  if (!waiting) { box.hidden = true; return; }
  if (!box.hidden && box.dataset.job === job.id) return;
  box.dataset.job = job.id;
  const body = $("series-table").querySelector("tbody");
  body.textContent = "";
  for (const s of series) {
    const tr = document.createElement("tr");
    const td1 = document.createElement("td");
    // the series number as a PACS shows it, and what sets the series apart (the words
    // of the command line's list: not read and why, number shared, not 3D)
    const remarks = (s.remarks || []).join("; ");
    td1.textContent = `${s.id}: ${s.description || "(no description)"}${remarks ? ` (${remarks})` : ""}`;
    const td2 = document.createElement("td");
    td2.textContent = s.shape.length ? s.shape.join("×\u200b") : "–";  // may wrap after ×
    const td3 = document.createElement("td");
    const sel = document.createElement("select");
    sel.dataset.series = s.id;
    sel.className = "series-select";
    sel.setAttribute("aria-label", `Modality of series ${s.id}: ${s.description || "no description"}`);
    sel.appendChild(new Option("not used", ""));
    for (const [k, v] of Object.entries(MOD_NAMES)) sel.appendChild(new Option(v, k));
    sel.value = s.usable ? (s.guess || "") : "";  // one that cannot be chosen is not sent
    sel.disabled = !s.usable;
    td3.appendChild(sel);
    tr.append(td1, td2, td3);
    body.appendChild(tr);
  }
  const notes = (job.inputs && job.inputs.notes) || [];
  $("series-notes").hidden = !notes.length;
  $("series-notes").textContent = notes.length ? `Note: ${notes.join("; ")}` : "";
  box.hidden = false;
}

async function confirmSeries() {
  const mods = {};
  for (const sel of document.querySelectorAll(".series-select")) if (sel.value) mods[sel.dataset.series] = sel.value;
  try {
    showJob(await postJSON(`/api/jobs/${state.job.id}/series`, { modalities: mods }), false);
    $("series-box").hidden = true;
  } catch (e) { setMsg("job-msg", e.message); }
}

// -- viewer -----------------------------------------------------------------------------
async function ensureViewer() {
  if (state.nv) return state.nv;
  const nv = new niivue.Niivue({
    backColor: [0, 0, 0, 1],
    show3Dcrosshair: true,
    // Okabe and Ito's bluish green: apart from the three label colours, also with
    // deuteranopia and protanopia (the light blue of before was the edema's colour)
    crosshairColor: [0.0, 0.62, 0.45, 0.9],
    dragAndDropEnabled: false,
    isColorbar: false,
    loadingText: "loading",
    // the reports' view: the patient's right on the screen's left, anterior on the left of
    // a sagittal slice, a letter at each edge of every slice
    isRadiologicalConvention: $("convention").value === "radiological",
    sagittalNoseLeft: true,
    showAllOrientationMarkers: true,
    // the letters sit just inside each pane's edges: a gap between the panes keeps one
    // pane's right (or bottom) letter apart from the next one's left (or top) letter,
    // which met as "LA" and stacked as "P" over "S" on a phone
    multiplanarPadPixels: 20,
  });
  await nv.attachToCanvas($("gl"));
  nv.onLocationChange = (d) => {
    const text = locationText(d);
    $("location").textContent = text;
    $("location").title = text;  // the whole of it, where the line is cut short
    sayLocation(text);
  };
  const canvas = $("gl");
  canvas.addEventListener("pointerdown", (e) => { state.pendingClick = e.button === 0; });
  // The viewer's keys, handled here before NiiVue's own (a listener that captures the
  // key on the way down to the canvas): the arrow keys and H, J, K, L move the crosshair
  // one voxel within the slice, left and right as the screen shows them (in the
  // radiological view the patient's right, +x in RAS, lies on the screen's left; NiiVue
  // moves H and L the other way there, and gives the left and right arrows to the frames
  // of a 4D image, which a case does not have); Page Up and Page Down move it to the next
  // or previous slice (NiiVue's Ctrl+U and Ctrl+D are the browser's page source and
  // bookmark keys). None of them scrolls the page. In the 3D view alone, H, J, K, L are
  // left to NiiVue, which turns the rendering with them.
  const KEYS = {
    ArrowLeft: [-1, 0, 0], ArrowRight: [1, 0, 0], ArrowUp: [0, 1, 0], ArrowDown: [0, -1, 0],
    KeyH: [-1, 0, 0], KeyL: [1, 0, 0], KeyK: [0, 1, 0], KeyJ: [0, -1, 0],
    PageUp: [0, 0, 1], PageDown: [0, 0, -1],
  };
  $("canvas-wrap").addEventListener("keydown", (e) => {
    const step = KEYS[e.code] || KEYS[e.key];
    if (e.target !== canvas || !step || e.ctrlKey || e.metaKey || e.altKey) return;
    if (/^Key/.test(e.code) && nv.opts.sliceType === nv.sliceTypeRender) return;
    e.preventDefault();
    e.stopPropagation();  // NiiVue's own handling of the key is not run
    if (!nv.volumes.length) return;
    const flip = step[0] && nv.opts.isRadiologicalConvention ? -1 : 1;
    nv.moveCrosshairInVox(step[0] * flip, step[1], step[2]);
  }, { capture: true });
  canvas.addEventListener("pointerup", (e) => {
    if (!state.pendingClick) return;
    state.pendingClick = false;
    if (!$("correct-toggle").checked) return;
    // the seed goes where the click was, read from the slice under it: NiiVue reports no
    // location change when the crosshair is there already (a second click on one point)
    const rect = canvas.getBoundingClientRect();
    const dpr = nv.uiData.dpr || 1;
    const at = [(e.clientX - rect.left) * dpr, (e.clientY - rect.top) * dpr];
    // after NiiVue's own handlers have moved the crosshair there
    setTimeout(() => {
      const frac = nv.canvasPos2frac(at);
      if (!frac || frac[0] < 0) {
        setMsg("correct-msg", "No seed: click on one of the slices (the 3D view and the " +
               "margins around the slices take none).");
        return;
      }
      placeSeed(Array.from(nv.frac2mm(frac)).slice(0, 3));
    }, 40);
  });
  state.nv = nv;
  // a software renderer (no GPU) draws the 3D pane slowly: start with the slices only
  if (softwareRenderer(nv)) $("layout").value = "slices";
  applyLayout();
  return nv;
}

// The readout said to a screen reader (a polite live region) at most twice a second:
// the crosshair moved by a held key says where it came to rest, not every voxel on the way
const SAY_EVERY_MS = 500;
function sayLocation(text) {
  state.locationText = text;
  if (state.locationTimer) return;  // said when the wait is over, as it is then
  const wait = Math.max(0, (state.locationSaid || -Infinity) + SAY_EVERY_MS - performance.now());
  state.locationTimer = setTimeout(() => {
    state.locationTimer = null;
    state.locationSaid = performance.now();
    if ($("location-live").textContent !== state.locationText) {
      $("location-live").textContent = state.locationText;
    }
  }, wait);
}

// the line under the viewer: where the crosshair is, in scanner millimetres (NIfTI's
// RAS+ world space), the shown image's intensity there and the label drawn there
function locationText(d) {
  const nv = state.nv;
  if (!d || !d.mm || !nv || !nv.volumes.length) return "";
  const mm = Array.from(d.mm).slice(0, 3).map((v) => v.toFixed(1));
  const parts = [`Crosshair at (${mm.join(", ")}) mm, scanner RAS`];
  const fmt = (v) => (Math.abs(v) >= 100 ? v.toFixed(0) : String(Number(v.toPrecision(3))));
  nv.volumes.forEach((vol, i) => {
    const v = d.values && d.values[i] ? d.values[i].value : undefined;
    if (typeof v !== "number" || !Number.isFinite(v)) return;
    if (vol.__role === "bg") parts.push(`${MOD_NAMES[state.bgModality] || "image"} intensity ${fmt(v)}`);
    if (vol.__role === "unc") parts.push(`uncertainty ${fmt(v)}`);
  });
  const dims = nv.back && nv.back.dimsRAS;
  if (state.loadedOverlay && dims && nv.drawBitmap && nv.drawBitmap.length === dims[1] * dims[2] * dims[3]) {
    const v = nv.frac2vox(nv.scene.crosshairPos);
    const label = nv.drawBitmap[v[0] + v[1] * dims[1] + v[2] * dims[1] * dims[2]];
    if (label in LABEL_NAMES) parts.push(LABEL_NAMES[label]);
  }
  return parts.join(" · ");
}

function softwareRenderer(nv) {
  try {
    const gl = nv.gl;
    const ext = gl.getExtension("WEBGL_debug_renderer_info");
    const name = String(gl.getParameter(ext ? ext.UNMASKED_RENDERER_WEBGL : gl.RENDERER));
    return /swiftshader|llvmpipe|software/i.test(name);
  } catch (e) {
    return false;
  }
}

// the orientation chosen last on this browser (radiological unless the user chose the
// other), kept across visits as a reader's habit
function savedConvention() {
  try {
    return localStorage.getItem("braintumor.convention") === "neurological" ? "neurological" : "radiological";
  } catch (e) {
    return "radiological";
  }
}

function applyConvention() {
  const v = $("convention").value;
  try { localStorage.setItem("braintumor.convention", v); } catch (e) { /* private window */ }
  if (state.nv) state.nv.setRadiologicalConvention(v === "radiological");
}

function applyLayout() {
  const nv = state.nv;
  if (!nv) return;
  const v = $("layout").value;
  nv.opts.multiplanarShowRender = v === "slices" ? niivue.SHOW_RENDER.NEVER : niivue.SHOW_RENDER.ALWAYS;
  const types = { multi: nv.sliceTypeMultiplanar, slices: nv.sliceTypeMultiplanar, axial: nv.sliceTypeAxial,
                  coronal: nv.sliceTypeCoronal, sagittal: nv.sliceTypeSagittal, render: nv.sliceTypeRender };
  nv.setSliceType(types[v]);
}

function labelColormap() {
  const cm = { R: [0], G: [0], B: [0], A: [0], I: [0], labels: ["", "NCR", "ED", "ET"] };
  for (const l of [1, 2, 3]) {
    cm.R.push(COLOURS[l][0]); cm.G.push(COLOURS[l][1]); cm.B.push(COLOURS[l][2]);
    cm.A.push(state.hidden.has(l) ? 0 : 255);
    cm.I.push(l);
  }
  return cm;
}

// The label map is shown as NiiVue's drawing layer: a lookup in the slice shader, far
// cheaper to load and to update after a correction than a blended overlay volume.
function applyLabelColours() {
  const nv = state.nv;
  if (!nv || !state.loadedOverlay) return;
  nv.drawOpacity = state.opacity;
  if (niivue.cmapper && nv.refreshColormaps) {
    // only the colour table changes: setDrawColormap would rebuild every volume layer,
    // which takes seconds on a software renderer
    nv.drawLut = niivue.cmapper.makeDrawLut(labelColormap());
    nv.refreshColormaps();
    nv.drawScene();
  } else {
    nv.setDrawColormap(labelColormap());
  }
}

const VIEWER_ERROR = "The viewer could not show the images:";

// The viewer's controls act on a case shown in it: off (and out of the tab order) until
// there is one
function enableViewerControls() {
  for (const el of document.querySelectorAll(".needs-case")) el.disabled = false;
  seedKindShown();
}

// An outside seed removes whatever label is there: no region to choose, and the menu,
// greyed, says so rather than showing the region an inside seed would take (kept for it)
function seedKindShown() {
  const menu = $("correct-region");
  const outside = document.querySelector("input[name=seed-kind]:checked").value === "outside";
  if (outside && menu.value) state.region = menu.value;
  if (!outside && !menu.value) menu.value = state.region || "3";
  if (outside) menu.value = "";
  menu.disabled = outside;
}

async function loadViewer(job) {
  if (state.busy) return;
  // a scan without T1 or T2 has no such image to show
  for (const b of document.querySelectorAll("#mod-btns button")) {
    b.disabled = !(b.dataset.mod in job.urls.images);
    b.title = b.disabled ? `This scan has no ${b.textContent} image.` : "";
  }
  enableViewerControls();
  if (!(state.modality in job.urls.images) && "flair" in job.urls.images) switchMark("flair");
  const bgMod = state.modality in job.urls.images ? state.modality : Object.keys(job.urls.images)[0];
  const bgUrl = job.urls.images[bgMod];
  const overlayUrl = job.urls.overlay || null;
  if (bgUrl === state.loadedBg && overlayUrl === state.loadedOverlay) {
    // the image and outline are up, but a layer may have come since (the uncertainty map
    // is written after the outline): its toggle is enabled when it is there
    state.busy = true;
    try {
      await refreshUncertainty();
      await refreshDiameters();
    } catch (e) {
      setMsg("job-msg", `${VIEWER_ERROR} ${e.message || e}`);
    } finally {
      state.busy = false;
    }
    return;
  }
  state.busy = true;
  try {
    const nv = await ensureViewer();
    $("placeholder").hidden = true;
    $("img2d").hidden = true;
    $("gl").hidden = false;
    $("legend").hidden = false;
    $("correct-tools").hidden = false;
    if (bgUrl !== state.loadedBg) {
      mark("image_load_start");
      await nv.loadVolumes([{ url: bgUrl, colormap: "gray" }]);
      mark("image_shown");
      nv.volumes[0].__role = "bg";
      state.loadedBg = bgUrl;
      state.bgModality = bgMod;
      state.loadedOverlay = null;
      state.loadedUnc = null;
      state.loadedDiam = null;
    }
    if (overlayUrl && overlayUrl !== state.loadedOverlay) await replaceOverlay(overlayUrl);
    centreOnTumour(job);
    applyLabelColours();
    await refreshUncertainty();
    await refreshDiameters();
    if (overlayUrl) mark("outline_shown");
    nv.createOnLocationChange();  // the readout, for the image and labels now shown
    document.body.dataset.viewer = overlayUrl ? "overlay" : "image";
    if ($("job-msg").textContent.startsWith(VIEWER_ERROR)) setMsg("job-msg", "");
  } catch (e) {
    setMsg("job-msg", `${VIEWER_ERROR} ${e.message || e}`);
  } finally {
    state.busy = false;
  }
  // the job may have moved on while we were loading
  if (state.job && state.job.id === job.id && state.job !== job) loadViewer(state.job);
}

// once per job, when its outline shows and its lesions are measured (the outline comes
// first, the diameters a moment later): the three views through the middle of the
// largest lesion (its longest diameter's midpoint) instead of the middle of the volume
function centreOnTumour(job) {
  const r = job.result || {};
  const s = r.summary;
  const nv = state.nv;
  if (state.centredJob === job.id || r.kind === "2d" || !s || !nv) return;
  if (!job.urls || !job.urls.overlay || state.loadedOverlay !== job.urls.overlay) return;
  if (!s.diameters && s.lesion_count == null) return;  // not measured yet
  state.centredJob = job.id;
  const d = s.diameters;
  const lesion = d && ["WT", "ET"].map((k) => d[k] && d[k].lesions && d[k].lesions[0])
    .find((l) => l && l.centre_mm);
  if (lesion) moveCrosshair(lesion.centre_mm);
}

async function replaceOverlay(url) {
  const ok = await state.nv.loadDrawingFromUrl(url);
  if (!ok) throw new Error("the label map does not fit the image grid");
  state.loadedOverlay = url;
}

// a volume laid over the scan while its toggle is ticked: `role` names it among the
// viewer's volumes, `key` is its state.loaded* field, `url` null when there is none
async function refreshLayer(role, key, toggle, url, options) {
  const nv = state.nv;
  $(toggle).disabled = !url;
  const want = url && $(toggle).checked ? url : null;
  if (want === state[key]) return;
  const old = nv.volumes.find((v) => v.__role === role);
  if (old) nv.removeVolume(old);
  state[key] = null;
  if (want) {
    const vol = await niivue.NVImage.loadFromUrl({ url: want, ...options });
    vol.__role = role;
    nv.addVolume(vol);
    state[key] = want;
  }
  nv.createOnLocationChange();  // the readout names the layers now shown, at once
}

// the largest lesions' two diameters (1 longest, 2 perpendicular) as a volume over the scan
async function refreshDiameters() {
  const job = state.job;
  if (!state.nv || !job) return;
  const s = job.result && job.result.summary;
  const has = job.status === "done" && s && s.diameters &&
    ["ET", "WT"].some((r) => s.diameters[r] && s.diameters[r].lesions.length);
  // white, apart from the green crosshair and the coloured regions
  await refreshLayer("diam", "loadedDiam", "diam-toggle", has ? job.urls.diameters : null,
                     { colormap: "gray", opacity: 1, cal_min: 0, cal_max: 1 });
}

// Uncertainty in one blue-violet hue, from clear (certain) to opaque (least certain):
// a red-to-yellow ramp read as necrotic core and enhancing tumour where it lay over them
const UNCERTAINTY_RGB = [51, 34, 255];

async function refreshUncertainty() {
  const job = state.job;
  if (!state.nv || !job) return;
  if (!state.nv.__uncertaintyColormap) {
    const [r, g, b] = UNCERTAINTY_RGB;
    state.nv.addColormap("uncertainty", { R: [0, r], G: [0, g], B: [0, b], A: [0, 255], I: [0, 255] });
    state.nv.__uncertaintyColormap = true;
  }
  await refreshLayer("unc", "loadedUnc", "unc-toggle", job.urls.uncertainty || null,
                     // entropy in bits (0 sure .. 1 a coin toss): clear under 0.1 bit
                     // (p under 0.013 or over 0.987), so the sure brain keeps its grey
                     { colormap: "uncertainty", opacity: 0.8, cal_min: 0.1, cal_max: 1 });
}

function switchMark(mod) {
  state.modality = mod;
  for (const b of document.querySelectorAll("#mod-btns button")) {
    b.classList.toggle("on", b.dataset.mod === mod);
    b.setAttribute("aria-pressed", String(b.dataset.mod === mod));
  }
}

function switchModality(mod) {
  switchMark(mod);
  if (state.job && state.job.urls.images) {
    state.loadedBg = null;
    loadViewer(state.job);
  }
}

function areaText(px, mm2) {
  return mm2 === undefined || mm2 === null ? `${px} pixels` : `${mm2.toFixed(1)} mm² (${px} pixels)`;
}

// the picture with its outline drawn in, with the uploaded reference's outline over it,
// or alone, to judge what is under the outline
function picture2d() {
  return $("show2d").value;
}

// the picture's text alternative: which slice (of a stack) and what is drawn on it
function alt2d(where) {
  const shown = { overlay: "with the outline", reference: "with the outline and the reference's (blue)",
                  input: "without the outline" }[picture2d()];
  return `${where}, ${shown}`;
}

function show2d(job) {
  $("placeholder").hidden = true;
  $("gl").hidden = true;
  // the picture's outline is drawn in it: the 3D labels' legend and the correction
  // tools do not apply
  $("legend").hidden = true;
  $("correct-tools").hidden = true;
  const img = $("img2d");
  const r = job.result;
  const n = r.slices || 1;
  // the reference's outline is there to show only when a reference mask came with the job
  const withRef = $("show2d").querySelector("option[value='reference']");
  withRef.hidden = !r.has_reference;
  if (!r.has_reference && $("show2d").value === "reference") $("show2d").value = "overlay";
  const known = r.pixel_mm !== undefined && r.pixel_mm !== null;
  const unit = known ? "" : " (pixel size unknown)";
  $("m-method").textContent = n > 1 ? `2D model, ${n} slices as one volume` : "2D model";
  $("m-grid").hidden = true;
  $("m-agree").hidden = true;
  $("m-model").textContent = r.model_version || "-";
  $("m-corr-line").hidden = true;  // a picture is not corrected
  $("lesion-line").hidden = true;
  $("vol-h1").textContent = "Measure";
  $("vol-h2").textContent = known ? "mm²" : "pixels";
  const body = $("vol-table").querySelector("tbody");
  body.textContent = "";
  const row = (name, value, id) => {
    const tr = document.createElement("tr");
    const td1 = document.createElement("td");
    td1.textContent = name;
    const td2 = document.createElement("td");
    td2.className = "num";
    td2.textContent = value;
    if (id) td2.id = id;
    tr.append(td1, td2);
    body.appendChild(tr);
  };
  if (n > 1) {
    row(`Tumour area, this slice${unit}`, "", "area2d-slice");
    // the largest slice's area is an area of the tumour; the slices' areas added up
    // are not (neither an area nor a volume), and are said for what they are
    const big = r.slice_area_px.indexOf(Math.max(...r.slice_area_px));
    const bigPx = r.slice_area_px[big];
    row(`Tumour area, largest slice (${big + 1} of ${n})${unit}`,
        areaText(bigPx, known ? bigPx * r.pixel_mm * r.pixel_mm : null));
    row(`Tumour area summed over ${r.tumour_slices} slices with tumour${unit}`,
        areaText(r.area_px, r.area_mm2));
    row("Slices with tumour", `${r.tumour_slices} of ${n}`);
    const nav = $("slice2d-nav");
    const range = $("slice2d");
    range.max = String(n - 1);
    const showSlice = (k) => {
      img.src = `${job.urls.slice2d}${k}/${picture2d()}.png`;
      img.alt = alt2d(`Slice ${k + 1} of ${n}, ${r.slice_names[k]}`);
      $("slice2d-name").textContent = `${k + 1}/${n} ${r.slice_names[k]}`;
      range.setAttribute("aria-valuetext", `slice ${k + 1} of ${n}, ${r.slice_names[k]}`);
      const a = r.slice_area_px[k];
      $("area2d-slice").textContent = areaText(a, known ? a * r.pixel_mm * r.pixel_mm : null);
    };
    range.oninput = () => showSlice(parseInt(range.value, 10));
    $("show2d").onchange = () => showSlice(parseInt(range.value, 10));
    range.value = String(r.show_slice || 0);
    showSlice(r.show_slice || 0);
    nav.hidden = false;
  } else {
    const showPicture = () => {
      img.src = job.urls.image2d[picture2d()];
      img.alt = alt2d("The 2D picture");
    };
    showPicture();
    $("show2d").onchange = showPicture;
    row(`Tumour area${unit}`, `${areaText(r.area_px, r.area_mm2)}, ${(100 * r.area_fraction).toFixed(1)} % of the picture`);
  }
  // the largest lesion's longest diameter and the one perpendicular to it (RANO's way)
  const d = r.diameters;
  row(`Largest lesion, diameters${d && n > 1 ? ` (slice ${d.slice + 1})` : ""}`,
      d ? d.text : "none", "diam2d");
  const m = r.metrics_2d;
  if (m) {
    row(n > 1 ? "Dice, all slices as one volume (uploaded masks)" : "Dice (uploaded mask)", m.dice.toFixed(3));
    if (n > 1) {
      row("Dice per slice with tumour, mean", m.slice_dice_mean === null ? "-" : m.slice_dice_mean.toFixed(3));
      row("Tumour-free slices outlined", `${m.fp_slices} of ${m.tumour_free_slices}`);
      row("Tumour slices missed", `${m.missed_slices} of ${m.tumour_slices}`);
    }
  }
  img.hidden = false;
  $("dl-labels").textContent = n > 1 ? "Masks (zip of PNG, one per slice)" : "Mask (PNG)";
  enableLink("dl-labels", job.urls.download);
  enableLink("dl-report-html", job.urls.report_html);
  enableLink("dl-report-pdf", job.urls.report_pdf);
  document.body.dataset.viewer = "2d";
}

// -- results ----------------------------------------------------------------------------
function enableLink(id, url) {
  const a = $(id);
  if (!url) return;
  a.href = url;
  a.classList.remove("disabled");
  a.removeAttribute("aria-disabled");
}

// a volume (mL) as the reports show it (report.ml_text): to 0.01 mL, to 0.001 mL under
// 0.1 mL so that a small region neither looks absent nor makes TC = NCR + ET disagree as
// shown, and "< 0.001" for one present that rounds to 0
// How an edit changed the whole tumour, from the job before it to the job after it:
// "Whole tumour 27.50 → 10.70 mL (−16.80 mL). " ("" when either is not known); an edit
// that left the whole tumour as it was (a region relabelled) says the region it changed,
// and one that changed no volume says so
function volumeChange(before, after) {
  const vols = (job) => (job && job.result && job.result.summary &&
    job.result.summary.volumes_ml) || {};
  const va = vols(before), vb = vols(after);
  if (typeof va.WT !== "number" || typeof vb.WT !== "number") return "";
  const names = [["WT", "Whole tumour"], ["TC", "Tumour core"], ["ET", "Enhancing tumour"]];
  for (const [key, name] of names) {
    const a = va[key], b = vb[key];
    if (typeof a !== "number" || typeof b !== "number" || Math.abs(b - a) < 0.0005) continue;
    const d = b - a;
    const sign = d < 0 ? "−" : "+";
    return `${name} ${mlText(a)} → ${mlText(b)} mL (${sign}${mlText(Math.abs(d))} mL). `;
  }
  return "Volumes unchanged. ";
}

function mlText(v) {
  if (v === 0 || v >= 0.1) return v.toFixed(2);
  return Number(v.toFixed(3)) > 0 ? v.toFixed(3) : "< 0.001";
}

// the method that ran: a scan without T1 or T2 is outlined by the watershed alone,
// whatever was asked for (the form's Method menu keeps the reader's choice), and says why
function methodText(job) {
  const ran = (job.result && job.result.method) || job.method;
  const images = job.urls.images;
  const missing = images ? ["t1", "t2"].filter((m) => !(m in images)).map((m) => MOD_NAMES[m]) : [];
  if (ran === job.method || !missing.length) return ran;
  return `${ran} (${missing.join("/")} missing; ${job.method} asked for)`;
}

function renderResult(job) {
  const r = job.result || {};
  const s = r.summary || {};
  const body = $("vol-table").querySelector("tbody");
  body.textContent = "";
  for (const row of s.volume_rows || []) {
    const tr = document.createElement("tr");
    const td1 = document.createElement("td");
    td1.textContent = row.name;
    const td2 = document.createElement("td");
    td2.className = "num";
    td2.dataset.key = row.key;
    td2.textContent = mlText(s.volumes_ml[row.key] ?? 0);
    tr.append(td1, td2);
    body.appendChild(tr);
  }
  $("lesion-count").textContent = s.lesion_count ??
    (s.measure_failed ? "not counted (measuring failed)" : "counting…");
  const diam = s.diameters;
  $("diam-line").hidden = !diam;
  for (const [region, id] of [["ET", "diam-et"], ["WT", "diam-wt"]]) {
    const d = diam && diam[region];
    const largest = d && d.lesions && d.lesions[0];
    $(id).textContent = d ? d.text : "-";
    $(id).dataset.mm = largest ? largest.centre_mm.join(",") : "";
    // a link to the slice measured on, or plain text where no lesion was ("none"): not a
    // link that is reached by Tab, says it shows a slice, and does nothing
    if (largest) {
      $(id).setAttribute("href", "#");
      $(id).setAttribute("aria-describedby", "diam-jump");
    } else {
      $(id).removeAttribute("href");
      $(id).removeAttribute("aria-describedby");
    }
    // the slice it was measured on, in the reports' words ("123 of 155, S 122.0 mm")
    $(`${id}-slice`).textContent = largest && largest.position ? `slice ${largest.position}` : "";
  }
  centreOnTumour(job);
  $("m-method").textContent = methodText(job);
  $("m-model").textContent = r.model_version || "-";
  $("m-corr").textContent = r.corrections || 0;
  $("m-corr-line").hidden = false;
  // the hybrid's two methods: how far they agree, region by region (a low value: check it)
  const agree = r.info && r.info.agreement;
  $("m-agree").hidden = !agree;
  $("m-agree").textContent = agree
    ? (r.corrections ? "Before the corrections, CNN and watershed agreed (Dice): "
      : "CNN and watershed agree (Dice): ") +
      ["WT", "TC", "ET"].map((k) => `${k} ${Number(agree[k]).toFixed(2)}`).join(" · ")
    : "";
  const resampled = r.info && r.info.resampled_to_mm && r.spacing_mm;
  $("m-grid").hidden = !resampled;
  $("m-grid").textContent = resampled
    ? `Voxels of ${r.spacing_mm.map((v) => +v.toFixed(2)).join(" × ")} mm: segmented on a 1 mm ` +
      "resampling (the grid the methods learned on); outline and volumes are on the scan's own grid."
    : "";
  const mbox = $("metrics-box");
  const mbody = $("metrics-table").querySelector("tbody");
  mbody.textContent = "";
  if (s.metrics) {
    for (const region of ["WT", "TC", "ET"]) {
      const m = s.metrics[region];
      if (!m) continue;
      const tr = document.createElement("tr");
      const cells = [region, m.dice, m.sensitivity, m.specificity, m.hd95];
      cells.forEach((c, i) => {
        const td = document.createElement(i === 0 ? "th" : "td");
        td.textContent = i === 0 ? c : (c === null || c === undefined ? "-" : Number(c).toFixed(i === 4 ? 1 : 3));
        if (i) td.className = "num";
        tr.appendChild(td);
      });
      mbody.appendChild(tr);
    }
    mbox.hidden = false;
  } else if (s.metrics_note) {
    mbox.hidden = false;
  } else {
    mbox.hidden = true;
  }
  setMsg("metrics-note", s.metrics_note || "");
  if (job.status !== "done") return;
  $("followup").hidden = false;
  // a DICOM study says its own date; the reader may still change it
  if (!$("cmp-after-date").value && job.inputs && job.inputs.study_date) {
    $("cmp-after-date").value = job.inputs.study_date;
  }
  if (!state.busy) refreshDiameters();  // measured after the outline was first shown
  if (state.cmpVersion !== undefined && state.cmpVersion !== revisionOf(job)) {
    // a correction changed the outline: the comparison shown is of the old one
    $("cmp-table").hidden = true;
    $("cmp-caveat").hidden = true;
    $("cmp-warn").hidden = true;
    $("cmp-file").value = "";
    setMsg("cmp-msg", "The outline changed; choose the earlier label map again to compare.");
    state.cmpVersion = undefined;
  }
  enableLink("dl-labels", job.urls.download);
  enableLink("dl-report-html", job.urls.report_html);
  enableLink("dl-report-pdf", job.urls.report_pdf);
  $("correct-toggle").disabled = !(state.info && state.info.correction_available);
  $("seed-here-btn").disabled = $("correct-toggle").disabled || !$("correct-toggle").checked;
  $("correct-toggle").title = $("correct-toggle").disabled ? "Correction is not available on this server." : "";
  // nothing left to undo: the focus goes to the message that says it was undone
  disable("undo-btn", !(job.label_version > 0), "correct-msg");
  document.body.dataset.result = `v${job.label_version}`;
}

// -- follow-up -----------------------------------------------------------------------------
async function compareWith(file) {
  const job = state.job;
  if (!job || !file) return;
  const form = new FormData();
  form.append("before", file, file.name);
  // the dates a reader typed (a label map carries none), sent only when given
  if ($("cmp-before-date").value) form.append("before_date", $("cmp-before-date").value);
  if ($("cmp-after-date").value) form.append("after_date", $("cmp-after-date").value);
  setMsg("cmp-msg", "Comparing…", true);
  $("cmp-table").hidden = true;
  $("cmp-caveat").hidden = true;
  $("cmp-warn").hidden = true;
  try {
    const r = await api(`/api/jobs/${job.id}/compare`, { method: "POST", body: form });
    const table = $("cmp-table");
    for (const old of table.querySelectorAll("tbody")) old.remove();
    for (const row of r.rows) {
      // quantity, before, after, change, percent, reading: the quantity heads its group,
      // the change is shown as a percent
      const body = document.createElement("tbody");
      const head = document.createElement("tr");
      const th = document.createElement("th");
      th.scope = "rowgroup";
      th.colSpan = 4;
      th.textContent = row[0];
      head.appendChild(th);
      const tr = document.createElement("tr");
      [row[1], row[2], row[4] === "-" ? row[3] : row[4], row[5]].forEach((c, i) => {
        const td = document.createElement("td");
        td.textContent = c;
        if (i < 3) td.className = "num";
        tr.appendChild(td);
      });
      body.append(head, tr);
      table.appendChild(body);
    }
    // whether the earlier file looks like this patient's: above the table, not missed
    const warn = $("cmp-warn");
    warn.textContent = "";
    for (const w of r.warnings || []) {
      const line = document.createElement("strong");
      line.textContent = `Warning: ${w}`;
      warn.append(line, document.createElement("br"));
    }
    warn.hidden = !(r.warnings || []).length;
    $("cmp-table").hidden = false;
    $("cmp-caveat").textContent = r.caveat;
    $("cmp-caveat").hidden = false;
    // a label map carries no date: the scans' dates only where known, never guessed
    const dated = (d) => d || "date not known";
    const case_ = job.inputs && job.inputs.case_id ? `${job.inputs.case_id}, ` : "";
    const days = r.dates && r.dates.days !== null && r.dates.days !== undefined
      ? `${r.dates.days} days apart.` : "";
    setMsg("cmp-msg", [`Earlier file: ${r.files.before} (${dated(r.dates && r.dates.before)}).`,
                       `This scan: ${case_}${dated(r.dates && r.dates.after)}.`, days,
                       ...(r.notes || [])].filter(Boolean).join(" "), true);
    state.cmpVersion = revisionOf(job);
  } catch (e) {
    setMsg("cmp-msg", e.message);
  }
}

// -- correction ---------------------------------------------------------------------------
// This page's corrections and undos go to the server one at a time, each naming the outline
// the page shows (its revision, which every correction and undo counts up, so one number
// names one outline; and its version) once the one before it is answered: two quick clicks
// are two corrections, the second on the first's outline. A click is only ever sent on the
// outline its reader saw when clicking, or on one this page's own steps made from it since:
// when the server's is another by then, it and the clicks behind it are not sent, and one
// sentence says so. The server refuses one made on an outline another page or reader
// changed since (409): its sentence is said and the job shown as the refusal gives it. A
// request the server does not answer within `state.correctionTimeoutMs` (stalled, or the
// network dropped) is given up likewise: the seeds clicked behind it are not sent, the page
// says so and shows the outline as the server has it. The one given up may still be
// applied there (a slow server): the page follows the job for `state.lateFollowMs` or until
// its outline moves, and shows a correction applied late as its own (each correction
// carries a name the job keeps), so the next click is made on it.
state.correctionTimeoutMs = 30000;
state.lateFollowMs = 120000;
state.late = null;     // the correction or undo given up, followed: { job, kind, from, fromVersion, request, until }
state.sending = 0;     // corrections or undos of this page awaiting their answer
state.queued = 0;      // clicks waiting for the one before them to be answered
state.own = new Map(); // revision made by this page's own step -> the revision it was made on
let correcting = Promise.resolve();
let refusals = 0;

// the outline a job shows, by the number that names it alone (a server from before the
// revision: its version)
const revisionOf = (job) => (typeof job.label_revision === "number" ? job.label_revision : job.label_version);

// whether the outline `rev` is `from`, or one this page's own steps made from it
function madeFrom(rev, from) {
  let r = rev;
  while (r !== from && state.own.has(r)) r = state.own.get(r);
  return r === from;
}

// a click's step, in turn: sent only on the outline shown when it was clicked (or one this
// page's own steps made from it); skipped with those behind it once a step is refused or
// given up
function inTurn(step) {
  const seen = refusals;
  const shown = state.job ? { id: state.job.id, rev: revisionOf(state.job) } : null;
  state.queued++;
  const run = correcting.then(() => {
    state.queued--;
    if (seen !== refusals || !shown || !state.job || state.job.id !== shown.id) return undefined;
    if (!madeFrom(revisionOf(state.job), shown.rev)) {
      refusals++;
      setMsg("correct-msg", "The outline changed on the server since this click (another page or " +
        "reader corrected or undid it), so it was not sent, nor any click after it: check the " +
        "outline as it is now and correct again.");
      return undefined;
    }
    return step();
  });
  correcting = run.catch(() => {});
  return run;
}
async function correctionPost(path, obj) {
  state.sending++;
  try {
    const body = await postJSON(path, obj, { timeoutMs: state.correctionTimeoutMs });
    if (!body || typeof body !== "object" || !body.id) throw unreadableAnswer();  // not a job
    return body;
  } finally {
    state.sending--;
  }
}
const requestName = () => `${Date.now().toString(36)}-${Math.random().toString(36).slice(2, 10)}`;
// the job `now` is still the one shown (the page may have gone on to another meanwhile)
const stillShown = (id) => !!state.job && state.job.id === id;
// whether the job `now` holds the correction `step` this page sent ({ kind, request }), known
// by its request name: the server keeps the name of the last correction it applied
const holdsCorrection = (now, step) => !!(step && step.kind === "correction" && now && now.result &&
  now.result.last_correction_request === step.request);

// what a late-applied correction or undo given up says: whether the job `now` shows
// `late` applied (a correction: its name is the job's last; an undo: one step back, the
// only change since), null while it still shows the outline `late` was made on
function lateOutcome(late, now) {
  if (!late || !now || now.id !== late.job) return null;
  if (holdsCorrection(now, late)) {
    return "The correction given up was applied by the server after all; the outline is shown with it.";
  }
  if (revisionOf(now) === late.from) return null;
  return late.kind === "undo" && revisionOf(now) === late.from + 1 && now.label_version === late.fromVersion - 1
    ? "The outline is one step back on the server now: the undo given up was most likely made there after all; it is shown as it is now."
    : "The outline changed on the server since (another page or reader corrected or undid it), so the step given up was not applied; it is shown as it is now.";
}

// the following `late` ends (a newer one, or none since, is left as it is)
function endLate(late) {
  if (!late || state.late !== late) return;
  state.late = null;
  clearTimeout(state.lateTimer);
}

// the step given up, followed until the server's outline moves (or for `lateFollowMs`):
// the outline it moves to is shown, with what it means, and the next click is made on it.
// Each following is of its own job: one whose page went on to another job ends unheard
function followLate() {
  clearTimeout(state.lateTimer);
  const late = state.late;
  if (!late) return;
  state.lateTimer = setTimeout(async () => {
    if (state.late !== late) return;
    if (!stillShown(late.job) || state.gone || performance.now() > late.until) {
      endLate(late);
      return;
    }
    if (!state.sending) {  // a click under way settles it with its own answer
      let now = null;
      try {
        now = await api(`/api/jobs/${late.job}`, { timeoutMs: 10000 });
      } catch (e) {
        if (state.late !== late || !stillShown(late.job)) return;
        if (e.status === 404 && e.fromServer) { endLate(late); jobGone(e.message); return; }
      }
      if (state.late !== late) return;
      if (!stillShown(late.job)) { endLate(late); return; }
      if (now && !state.sending && settleLate(late, now)) return;
    }
    followLate();
  }, 1000);
}

// the job `now` settles the step `late` followed: shown, and said; returns whether it did
function settleLate(late, now) {
  if (state.late !== late || !stillShown(now.id)) return false;
  const said = lateOutcome(late, now);
  if (!said) return false;
  endLate(late);
  if (holdsCorrection(now, late)) {
    state.own.set(revisionOf(now), late.from);  // this page's own, applied late
  }
  showJob(now, false);
  setMsg("correct-msg", said, "info");
  return true;
}

// a correction or undo refused: said where the correction's messages go, and the job shown
// as the server has it now (another tab may have corrected or undone it). `step` is what
// was sent: { job, kind, from, fromVersion, request }
async function correctionRefused(e, step) {
  if (!stillShown(step.job)) return;  // the page went on to another job meanwhile
  setMsg("correct-msg", e.message);
  if (e.status === 404 && e.fromServer) jobGone(e.message);
  else if (e.status === 409 && e.fromServer) {
    // the outline changed since this page showed it: the server's sentence says so, and
    // its answer carries the job as it is now (asked again only from a server without)
    refusals++;
    const now = e.body && e.body.job;
    if (now && now.id === state.job.id) showJob(now, false);
    else if (!now) await refreshJob();
  } else if (e.timedOut || e.network) {
    // no answer (stalled, or no connection): what is queued behind it is not sent blindly,
    // on an outline the server may have changed meanwhile; the request given up may still
    // be applied there, so the job is followed until it is or its outline moves otherwise
    refusals++;
    const late = { ...step, until: performance.now() + state.lateFollowMs };
    endLate(state.late);
    state.late = late;
    const why = e.timedOut ? `The server did not answer within ${Math.round(state.correctionTimeoutMs / 1000)} s`
      : "The server could not be reached";
    const reached = (await refreshJob(state.correctionTimeoutMs)) !== null;
    if (!stillShown(step.job)) return;
    if (state.gone) { endLate(late); return; }
    const outcome = reached && state.late === late ? lateOutcome(late, state.job) : null;
    if (outcome && holdsCorrection(state.job, late)) {
      endLate(late);
      state.own.set(revisionOf(state.job), late.from);
      setMsg("correct-msg", `${why}, but it applied the correction after all; the outline is shown with it.`, "info");
      return;
    }
    if (outcome) endLate(late);  // moved otherwise: the one given up can no longer apply
    const what = step.kind === "undo" ? "undo" : "correction";
    const watching = state.late === late;
    setMsg("correct-msg", !reached
      ? `${why}, so nothing more was sent; the outline shown may not be the server's: reload the page once it answers.`
      : watching
        ? `${why}, so nothing more was sent; the outline is shown as the server has it now, and this page shows the ${what} if the server applies it after all.`
        : `${why}, so nothing more was sent; the outline is shown as the server has it now: check it and correct again.`);
    if (watching) followLate();
  } else if (!e.status) {
    // the server answered, but its answer could not be read or shown (a proxy's page, a
    // fault of this page): the step may have been applied, so the job is shown as the
    // server has it. The clicks queued behind it were made on the outline this step was
    // to make: they go on only when the server's is that one (the correction, by its
    // name), and are not sent otherwise, which the sentence says
    const reached = (await refreshJob(state.correctionTimeoutMs)) !== null;
    if (!stillShown(step.job) || state.gone) return;
    const now = state.job;
    const applied = reached && holdsCorrection(now, step);
    if (applied) state.own.set(revisionOf(now), step.from);
    else refusals++;
    const what = e.unreadable ? "The server's answer could not be read"
      : `The server's answer could not be shown (${e.message})`;
    const dropped = !applied && state.queued > 0;
    setMsg("correct-msg", !reached
      ? `${what}, and the server could not be asked again${dropped ? ", so the clicks made after it were not sent" : ""}: reload the page.`
      : applied ? `${what}, but the correction was applied; the outline is shown with it.`
        : dropped ? `${what}, so the clicks made after it were not sent; the outline is shown as the server has it now: check it and correct again.`
          : `${what}; the outline is shown as the server has it now: check it.`, applied ? "info" : false);
  } else if (await refreshJob()) {
    setMsg("correct-msg", `${e.message} Another tab changed this outline; it is shown as it is now.`);
  }
}

function placeSeed(mm) {
  if (!state.job || state.job.status !== "done" || !mm) return;
  const region = parseInt($("correct-region").value || state.region || "3", 10);
  const inside = document.querySelector("input[name=seed-kind]:checked").value === "inside";
  const seed = { mm: [mm[0], mm[1], mm[2]], label: inside ? region : 0 };
  return inTurn(() => sendSeed(seed));
}

async function sendSeed(seed, after = "") {
  const job = state.job;
  if (!job || job.status !== "done" || state.gone) return;
  setMsg("correct-msg", "Correcting…", true);
  const t0 = performance.now();
  const late = state.late;
  const step = { job: job.id, kind: "correction", from: revisionOf(job), fromVersion: job.label_version,
                 request: requestName() };
  try {
    const updated = await correctionPost(`/api/jobs/${job.id}/corrections`,
                                         { seeds: [seed], version: job.label_version,
                                           revision: revisionOf(job), request: step.request });
    if (!stillShown(job.id)) return;  // the page went on to another job meanwhile
    // made: the step given up can no longer be applied (the outline it named is gone)
    endLate(late);
    if (revisionOf(updated) !== step.from) state.own.set(revisionOf(updated), step.from);
    const t1 = performance.now();
    showJob(updated, false);
    await waitViewerIdle();
    const t2 = performance.now();
    state.lastCorrection = { request_ms: t1 - t0, redraw_ms: t2 - t1 };
    if (updated.changed === false) {
      // no voxel changed (outside the brain, or asking for what is there): no correction,
      // not counted, nothing to undo; said as a fact, not as an update
      // "Nothing changed:" says it once, not again after each seed's note
      const why = (updated.note || "").replace(/; nothing changed there/g, "");
      setMsg("correct-msg", `${after}Nothing changed: ${why || "the seed asks for what the outline holds"}.`, "info");
      return;
    }
    const note = updated.note;
    // what the edit did, in mL: one outside seed may take away a whole lesion
    const change = volumeChange(job, updated);
    setMsg("correct-msg", note ? `${after}${change}Updated in ${((t2 - t0) / 1000).toFixed(2)} s; ${note}.`
      : `${after}${change}Updated in ${((t2 - t0) / 1000).toFixed(2)} s.`, true);
  } catch (e) {
    // refused because this page's own correction, given up, was applied meanwhile: the
    // seed goes on that outline, as a click queued behind an answered one would
    const now = e.status === 409 && e.fromServer && e.body && e.body.job;
    if (!after && now && now.id === job.id && stillShown(job.id) && holdsCorrection(now, late)) {
      endLate(late);
      state.own.set(revisionOf(now), late.from);
      showJob(now, false);
      return sendSeed(seed, "The correction given up was applied by the server after all, and this one made on it. ");
    }
    await correctionRefused(e, step);
  }
}

async function waitViewerIdle() {
  while (state.busy) await new Promise((r) => setTimeout(r, 20));
}

function undoCorrection() {
  if (!state.job) return;
  return inTurn(async () => {
    const job = state.job;
    if (!job || state.gone) return;
    const late = state.late;
    const step = { job: job.id, kind: "undo", from: revisionOf(job), fromVersion: job.label_version };
    try {
      // the outline shown: an undo takes back this outline's last step, not one another
      // page or reader made since
      const now = await correctionPost(`/api/jobs/${job.id}/corrections/undo`,
                                       { version: job.label_version, revision: revisionOf(job) });
      if (!stillShown(job.id)) return;
      endLate(late);  // the outline it named is gone
      state.own.set(revisionOf(now), step.from);
      showJob(now, false);
      setMsg("correct-msg", `Undone. ${volumeChange(job, now)}`.trim(), true);
    } catch (e) {
      // refused: the job may have changed in another tab (undone there already), so it is
      // fetched again and its count, Undo and outline shown as they are
      await correctionRefused(e, step);
    }
  });
}

window.addEventListener("popstate", () => location.reload());
document.addEventListener("DOMContentLoaded", init);
