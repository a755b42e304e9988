"""The hand-written C twin of ``cdp/extract/_walk.py``'s ``_Walk`` that ``gen_c.py`` appends to
``cdp/xdr/_cskip.c``: ``scan_ledger`` walks a ledger's changes with the generated skippers, without
the GIL, and hands Python only the contract-data and TTL changes (and contract-code restores)."""

from __future__ import annotations

from typing import Final

SCAN: Final = """
/* The walk of _Walk (cdp/extract/_walk.py) over a ledger's changes, in C, without the GIL: every
   change is stepped over with the skippers, STATE/RESTORED paired with the UPDATED/REMOVED after
   it, and only CONTRACT_DATA (6) and TTL (9) changes, and RESTORED CONTRACT_CODE (7) ones, are recorded,
   as word offsets. The records
   become Python objects afterwards, under the GIL. What _Walk raises as FastPathError this raises
   as ValueError, with the same message (this module cannot import that class). */

enum { E_NONE, E_INDEX, E_SKIP, E_COUNT, E_KIND, E_NOSTATE, E_TXMETA, E_LCM, E_END, E_NOMEM };
enum { FEE, BEFORE, OPERATION, AFTER, POST_APPLY_FEE, UPGRADE };
static const char *GROUP[] = {"fee", "before", "operation", "after", "post_apply_fee", "upgrade"};

typedef struct {
  int32_t batch, group, kind, etype;
  long tx, op;
  Py_ssize_t hash_at, pre_start, pre_end, start, end;
} Rec;

typedef struct {
  Ctx c;
  int err, egroup;
  long ea;
  Py_ssize_t eb;
  int32_t batch;
  Py_ssize_t evicted_at; /* the word where evicted_keys starts; -1 in v0 */
  Rec *v[4]; /* fees, metas, post-apply fees, upgrades: LedgerChangeReader order */
  Py_ssize_t n[4], cap[4];
} Scan;

static int fail_with(Scan *x, int err, long a, Py_ssize_t b) {
  if (!x->err) { x->err = err; x->ea = a; x->eb = b; }
  return -1;
}

static int word(Scan *x, Py_ssize_t o, int32_t *out) {
  if (o < 0 || o >= x->c.n) return fail_with(x, E_INDEX, 0, 0);
  *out = WORD(&x->c, o);
  return 0;
}

static int count(Scan *x, Py_ssize_t *o, int32_t *n) {
  if (word(x, *o, n)) return -1;
  if (*n < 0 || *n > x->c.n - *o - 1) return fail_with(x, E_COUNT, *n, 4 * *o);
  *o += 1;
  return 0;
}

static int step(Scan *x, Py_ssize_t *o, skipper fn) {
  Py_ssize_t end = fn(&x->c, *o, 0);
  if (end < 0) return fail_with(x, E_SKIP, 0, 0);
  *o = end;
  return 0;
}

static int array_of(Scan *x, Py_ssize_t *o, skipper fn) {
  int32_t n;
  if (count(x, o, &n)) return -1;
  for (int32_t i = 0; i < n; i++)
    if (step(x, o, fn)) return -1;
  return 0;
}

static int push(Scan *x, int stream, Rec r) {
  if (x->n[stream] == x->cap[stream]) {
    Py_ssize_t cap = x->cap[stream] ? 2 * x->cap[stream] : 16;
    Rec *grown = realloc(x->v[stream], (size_t)cap * sizeof(Rec));
    if (!grown) return fail_with(x, E_NOMEM, 0, 0);
    x->v[stream] = grown;
    x->cap[stream] = cap;
  }
  x->v[stream][x->n[stream]++] = r;
  return 0;
}

/* One LedgerEntryChanges at *o (what _Walk.changes does with it); one batch number per call. */
static int scan_one(Scan *x, Py_ssize_t *o, int stream, int group, long tx, long op, Py_ssize_t hash_at) {
  int32_t n, batch = x->batch++;
  if (count(x, o, &n)) return -1;
  int32_t prev_kind = -1, prev_type = -1;
  Py_ssize_t prev_start = -1, prev_end = -1;
  for (int32_t i = 0; i < n; i++) {
    int32_t kind, etype;
    if (word(x, *o, &kind)) return -1;
    Py_ssize_t start = *o + 1, end;
    if (kind == 2) {
      end = s_LedgerKey(&x->c, start, 0);
      if (end < 0) return fail_with(x, E_SKIP, 0, 0);
      etype = WORD(&x->c, start);
    } else if (kind == 0 || kind == 1 || kind == 3 || kind == 4) {
      end = s_LedgerEntry(&x->c, start, 0);
      if (end < 0) return fail_with(x, E_SKIP, 0, 0);
      etype = WORD(&x->c, start + 1);
    } else {
      return fail_with(x, E_KIND, kind, 4 * *o);
    }
    if (kind == 1 || kind == 2) {
      if (prev_kind != 3 && prev_kind != 4) {
        x->egroup = group;
        return fail_with(x, E_NOSTATE, 0, 4 * *o);
      }
      if ((prev_type == 6 || prev_type == 9) &&
          push(x, stream, (Rec){batch, group, kind, prev_type, tx, op, hash_at, prev_start, prev_end, start,
                                kind == 1 ? end : -1}))
        return -1;
    } else if (kind != 3 && (etype == 6 || etype == 9 || (kind == 4 && etype == 7))) {
      if (push(x, stream, (Rec){batch, group, kind, etype, tx, op, hash_at, -1, -1, start, end})) return -1;
    }
    prev_kind = kind; prev_type = etype; prev_start = start; prev_end = end;
    *o = end;
  }
  return 0;
}

static int tx_meta(Scan *x, Py_ssize_t *o, long i, Py_ssize_t hash_at) {
  int32_t v, n, flag;
  if (word(x, *o, &v)) return -1;
  *o += 1;
  if (v == 0) return array_of(x, o, s_OperationMeta);
  if (v == 1) {
    if (scan_one(x, o, 1, BEFORE, i, -1, hash_at) || count(x, o, &n)) return -1;
    for (int32_t k = 0; k < n; k++)
      if (scan_one(x, o, 1, OPERATION, i, k, hash_at)) return -1;
    return 0;
  }
  if (v < 2 || v > 4) return fail_with(x, E_TXMETA, v, 4 * *o - 4);
  if (v >= 3 && step(x, o, s_ExtensionPoint)) return -1;
  if (scan_one(x, o, 1, BEFORE, i, -1, hash_at) || count(x, o, &n)) return -1;
  for (int32_t k = 0; k < n; k++) {
    if (v == 4 && step(x, o, s_ExtensionPoint)) return -1;
    if (scan_one(x, o, 1, OPERATION, i, k, hash_at)) return -1;
    if (v == 4 && array_of(x, o, s_ContractEvent)) return -1;
  }
  if (scan_one(x, o, 1, AFTER, i, -1, hash_at)) return -1;
  if (v == 3 || v == 4) {
    if (word(x, *o, &flag)) return -1;
    *o += 1;
    if (flag && step(x, o, v == 3 ? s_SorobanTransactionMeta : s_SorobanTransactionMetaV2)) return -1;
  }
  if (v == 4 && (array_of(x, o, s_TransactionEvent) || array_of(x, o, s_DiagnosticEvent))) return -1;
  return 0;
}

static int ledger(Scan *x) {
  int32_t v, n;
  Py_ssize_t o = 1;
  if (word(x, 0, &v)) return -1;
  if (v < 0 || v > 2) return fail_with(x, E_LCM, v, 0);
  if (v && step(x, &o, s_LedgerCloseMetaExt)) return -1;
  if (step(x, &o, s_LedgerHeaderHistoryEntry)) return -1;
  if (step(x, &o, v == 0 ? s_TransactionSet : s_GeneralizedTransactionSet)) return -1;
  if (count(x, &o, &n)) return -1;
  for (int32_t i = 0; i < n; i++) {
    if (v == 2 && step(x, &o, s_ExtensionPoint)) return -1;
    Py_ssize_t hash_at = o;
    if (step(x, &o, s_TransactionResultPair)) return -1;
    if (scan_one(x, &o, 0, FEE, i, -1, hash_at) || tx_meta(x, &o, i, hash_at)) return -1;
    if (v == 2 && scan_one(x, &o, 2, POST_APPLY_FEE, i, -1, hash_at)) return -1;
  }
  if (count(x, &o, &n)) return -1;
  for (int32_t k = 0; k < n; k++)
    if (step(x, &o, s_LedgerUpgrade) || scan_one(x, &o, 3, UPGRADE, -1, -1, -1)) return -1;
  if (array_of(x, &o, s_SCPHistoryEntry)) return -1;
  x->evicted_at = -1;
  if (v) {
    o += 2; /* totalByteSizeOfLiveSorobanState */
    x->evicted_at = o;
    if (array_of(x, &o, s_LedgerKey)) return -1;
    if (v == 1 && array_of(x, &o, s_LedgerEntry)) return -1;
  }
  if (o != x->c.n) return fail_with(x, E_END, 0, 4 * o);
  return 0;
}

static void raise_for(Scan *x) {
  switch (x->err) {
  case E_NOMEM: PyErr_NoMemory(); return;
  case E_COUNT: PyErr_Format(PyExc_ValueError, "count %d at byte %zd exceeds the input", (int)x->ea, x->eb); return;
  case E_KIND: PyErr_Format(PyExc_ValueError, "LedgerEntryChangeType %d at byte %zd", (int)x->ea, x->eb); return;
  case E_NOSTATE:
    PyErr_Format(PyExc_ValueError, "%s group: change at byte %zd has no preceding STATE", GROUP[x->egroup], x->eb);
    return;
  case E_TXMETA: PyErr_Format(PyExc_ValueError, "TransactionMeta version %d at byte %zd", (int)x->ea, x->eb); return;
  case E_LCM: PyErr_Format(PyExc_ValueError, "LedgerCloseMeta version %d", (int)x->ea); return;
  case E_END: PyErr_Format(PyExc_ValueError, "walk ended at byte %zd of %zd", x->eb, 4 * x->c.n); return;
  case E_SKIP:
    if (x->c.what && strcmp(x->c.what, "index out of range") != 0) {
      raise_skip(x->c.what, x->c.at);
      return;
    }
    PyErr_SetString(PyExc_IndexError, "array index out of range"); /* a read past the end, as in Python */
    return;
  default: PyErr_SetString(PyExc_IndexError, "array index out of range");
  }
}

/* The records as [(group, tx, op, tx_hash_word, [(kind, etype, pre_start, pre_end, start, end), ...])],
   one entry per LedgerEntryChanges that holds wanted changes; -1 for no tx, op or hash. */
static PyObject *records(Scan *x) {
  PyObject *out = PyList_New(0), *items = NULL;
  if (!out) return NULL;
  for (int k = 0; k < 4; k++) {
    for (Py_ssize_t j = 0; j < x->n[k]; j++) {
      Rec *r = &x->v[k][j];
      if (!items) {
        items = PyList_New(0);
        if (!items) goto fail;
      }
      PyObject *item = Py_BuildValue("(iinnnn)", (int)r->kind, (int)r->etype, r->pre_start, r->pre_end, r->start,
                                     r->end);
      if (!item || PyList_Append(items, item) < 0) { Py_XDECREF(item); goto fail; }
      Py_DECREF(item);
      if (j + 1 == x->n[k] || x->v[k][j + 1].batch != r->batch) {
        PyObject *entry = Py_BuildValue("(illnN)", (int)r->group, r->tx, r->op, r->hash_at, items);
        items = NULL;
        if (!entry || PyList_Append(out, entry) < 0) { Py_XDECREF(entry); goto fail; }
        Py_DECREF(entry);
      }
    }
  }
  return out;
fail:
  Py_XDECREF(items);
  Py_DECREF(out);
  return NULL;
}

/* scan_ledger(w): w as for s_<Type>; what _Walk.ledger finds, in LedgerChangeReader order (fees,
   metas, post-apply fees, upgrades), as records (see records()), and the word where evicted_keys
   starts (-1: none); the walk itself runs without the GIL. */
static PyObject *py_scan_ledger(PyObject *m, PyObject *const *args, Py_ssize_t nargs) {
  (void)m;
  if (nargs != 1) {
    PyErr_SetString(PyExc_TypeError, "expected (words)");
    return NULL;
  }
  Py_buffer view;
  Scan x;
  memset(&x, 0, sizeof x);
  if (open_words(args[0], &view, &x.c) < 0) return NULL;
  int failed;
  Py_BEGIN_ALLOW_THREADS
  failed = ledger(&x);
  Py_END_ALLOW_THREADS
  PyObject *result = NULL;
  if (failed) raise_for(&x);
  else {
    PyObject *found = records(&x);
    if (found) result = Py_BuildValue("(Nn)", found, x.evicted_at);
  }
  for (int k = 0; k < 4; k++) free(x.v[k]);
  PyBuffer_Release(&view);
  return result;
}

"""
