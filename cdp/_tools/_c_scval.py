"""The hand-written C twin of ``cdp/extract/_scval_json.py`` that ``gen_c.py`` appends to
``cdp/xdr/_cskip.c``: ScVal bytes straight to the stellar-etl JSON value, as Python objects.

It renders exactly what ``_scval_json.scval`` renders (a test compares the two on every key and
value of the shared ledgers and on mutated ones) and leaves the same arms to stellar-sdk, raising
the caller's ``Unsupported``. Its input has passed ``c_SCVal``, but every read is bounds-checked
anyway and nesting is capped: hostile bytes get an exception, never a bad read.
"""

from __future__ import annotations

from typing import Final

SCVAL_JSON: Final = r"""
/* ---- scval_json(xdr, offset, contract_strkey, account_strkey, Unsupported) -> (value, end) ---- */

enum { JSON_MAX_DEPTH = 200 };

typedef struct {
  Ctx c;
  Py_ssize_t len; /* bytes */
  PyObject *contract_strkey, *account_strkey, *unsupported;
} Json;

static PyObject *J_KEY, *J_VAL, *J_VOID, *J_STELLAR_ASSET, *J_INSTANCE_KEY, *J_WASM, *J_EXECUTABLE, *J_STORAGE,
    *J_NONCE, *J_NAMES[22];

static int json_names(void) {
  static const char *names[22] = {"bool", NULL, NULL, "u32", "i32", "u64", "i64", "timepoint", "duration",
                                  "u128", "i128", "u256", "i256", "bytes", "string", "symbol", "vec", "map",
                                  "address", "contract_instance", NULL, "ledger_key_nonce"};
  if (J_NONCE) return 0; /* the last one made */
  for (int k = 0; k < 22; k++)
    if (names[k] && !(J_NAMES[k] = PyUnicode_InternFromString(names[k]))) return -1;
  J_KEY = PyUnicode_InternFromString("key");
  J_VAL = PyUnicode_InternFromString("val");
  J_VOID = PyUnicode_InternFromString("void");
  J_STELLAR_ASSET = PyUnicode_InternFromString("stellar_asset");
  J_INSTANCE_KEY = PyUnicode_InternFromString("ledger_key_contract_instance");
  J_WASM = PyUnicode_InternFromString("wasm");
  J_EXECUTABLE = PyUnicode_InternFromString("executable");
  J_STORAGE = PyUnicode_InternFromString("storage");
  J_NONCE = PyUnicode_InternFromString("nonce");
  return J_KEY && J_VAL && J_VOID && J_STELLAR_ASSET && J_INSTANCE_KEY && J_WASM && J_EXECUTABLE && J_STORAGE &&
      J_NONCE ? 0 : -1;
}

static PyObject *unsupported(Json *j, const char *what, long value, int with_value) {
  if (with_value) PyErr_Format(j->unsupported, "%s %ld", what, value);
  else PyErr_SetString(j->unsupported, what);
  return NULL;
}

static int jword(Json *j, Py_ssize_t o, int32_t *out) {
  if (RD(&j->c, o, out) == 0) return 0;
  PyErr_SetString(PyExc_ValueError, "ScVal runs past the end of the XDR");
  return -1;
}

/* The n bytes after the length word at o, bounds-checked; NULL with an exception set past the end. */
static const unsigned char *jbytes(Json *j, Py_ssize_t o, Py_ssize_t n) {
  if (n < 0 || 4 * o + 4 + n > j->len) {
    PyErr_SetString(PyExc_ValueError, "ScVal runs past the end of the XDR");
    return NULL;
  }
  return j->c.b + 4 * o + 4;
}

static PyObject *one(PyObject *name, PyObject *value) { /* {name: value}, stealing value */
  if (!value) return NULL;
  PyObject *d = PyDict_New();
  if (d && PyDict_SetItem(d, name, value) < 0) Py_CLEAR(d);
  Py_DECREF(value);
  return d;
}

/* _scval_json.xdr_string: alphanumeric ASCII as is, anything else SEP-51 escaped. */
static PyObject *xdr_string(const unsigned char *s, Py_ssize_t n) {
  int plain = n > 0;
  for (Py_ssize_t k = 0; plain && k < n; k++) {
    unsigned char ch = s[k];
    plain = (ch >= '0' && ch <= '9') || (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z');
  }
  if (plain) return PyUnicode_DecodeASCII((const char *)s, n, NULL);
  char *out = PyMem_Malloc((size_t)n * 4 + 1);
  if (!out) return PyErr_NoMemory();
  Py_ssize_t m = 0;
  static const char hex[] = "0123456789abcdef";
  for (Py_ssize_t k = 0; k < n; k++) {
    unsigned char ch = s[k];
    const char *esc = ch == 0    ? "\\0"
                      : ch == 9  ? "\\t"
                      : ch == 10 ? "\\n"
                      : ch == 13 ? "\\r"
                      : ch == 92 ? "\\\\"
                                 : NULL;
    if (esc) { out[m++] = esc[0]; out[m++] = esc[1]; }
    else if (ch >= 0x20 && ch <= 0x7e) out[m++] = (char)ch;
    else { out[m++] = '\\'; out[m++] = 'x'; out[m++] = hex[ch >> 4]; out[m++] = hex[ch & 15]; }
  }
  PyObject *text = PyUnicode_DecodeASCII(out, m, NULL);
  PyMem_Free(out);
  return text;
}

static PyObject *hex_of(const unsigned char *s, Py_ssize_t n) {
  PyObject *text = PyUnicode_New(2 * n, 127);
  if (!text) return NULL;
  Py_UCS1 *d = PyUnicode_1BYTE_DATA(text);
  static const char hex[] = "0123456789abcdef";
  for (Py_ssize_t k = 0; k < n; k++) { d[2 * k] = (Py_UCS1)hex[s[k] >> 4]; d[2 * k + 1] = (Py_UCS1)hex[s[k] & 15]; }
  return text;
}

static uint64_t u64_at(Json *j, Py_ssize_t o) {
  return ((uint64_t)(uint32_t)WORD(&j->c, o) << 32) | (uint32_t)WORD(&j->c, o + 1);
}

/* str of the 2 or 4 words' big-endian integer at o (signed: two's complement), through Python ints. */
static PyObject *big_int_text(Json *j, Py_ssize_t o, int words, int is_signed) {
  int32_t last;
  if (jword(j, o + words - 1, &last) < 0) return NULL;
  uint64_t high = u64_at(j, o);
  PyObject *value = is_signed ? PyLong_FromLongLong((long long)high) : PyLong_FromUnsignedLongLong(high);
  PyObject *shift = PyLong_FromLong(64);
  for (int k = 2; value && shift && k < words; k += 2) {
    PyObject *low = PyLong_FromUnsignedLongLong(u64_at(j, o + k));
    PyObject *high = low ? PyNumber_Lshift(value, shift) : NULL;
    PyObject *both = high ? PyNumber_Or(high, low) : NULL;
    Py_XDECREF(low);
    Py_XDECREF(high);
    Py_SETREF(value, both);
  }
  Py_XDECREF(shift);
  if (!value) return NULL;
  PyObject *text = PyObject_Str(value);
  Py_DECREF(value);
  return text;
}

static PyObject *u64_text(Json *j, Py_ssize_t o, int is_signed) {
  int32_t last;
  if (jword(j, o + 1, &last) < 0) return NULL;
  char buf[32];
  uint64_t u = u64_at(j, o);
  if (is_signed) snprintf(buf, sizeof buf, "%lld", (long long)u);
  else snprintf(buf, sizeof buf, "%llu", (unsigned long long)u);
  return PyUnicode_FromString(buf);
}

static PyObject *render(Json *j, Py_ssize_t *o, int depth);

static PyObject *map_entries(Json *j, Py_ssize_t *o, int depth) {
  int32_t n;
  if (jword(j, *o, &n) < 0) return NULL;
  *o += 1;
  PyObject *out = PyList_New(0); /* grown item by item: a hostile count runs out of bytes, not memory */
  for (uint32_t k = 0; out && k < (uint32_t)n; k++) {
    PyObject *key = render(j, o, depth + 1);
    PyObject *val = key ? render(j, o, depth + 1) : NULL;
    PyObject *entry = val ? PyDict_New() : NULL;
    if (!entry || PyDict_SetItem(entry, J_KEY, key) < 0 || PyDict_SetItem(entry, J_VAL, val) < 0 ||
        PyList_Append(out, entry) < 0)
      Py_CLEAR(out);
    Py_XDECREF(key);
    Py_XDECREF(val);
    Py_XDECREF(entry);
  }
  return out;
}

static PyObject *address(Json *j, Py_ssize_t *o) {
  int32_t kind, inner;
  if (jword(j, *o, &kind) < 0) return NULL;
  if (kind == 1) {
    const unsigned char *id = jbytes(j, *o, 32);
    if (!id) return NULL;
    *o += 9;
    return PyObject_CallFunction(j->contract_strkey, "y#", (const char *)id, (Py_ssize_t)32);
  }
  if (kind == 0) {
    if (jword(j, *o + 1, &inner) < 0) return NULL;
    if (inner == 0) {
      const unsigned char *key = jbytes(j, *o + 1, 32);
      if (!key) return NULL;
      *o += 10;
      return PyObject_CallFunction(j->account_strkey, "y#", (const char *)key, (Py_ssize_t)32);
    }
  }
  return unsupported(j, "SCAddress type", kind, 1);
}

static PyObject *render(Json *j, Py_ssize_t *o, int depth) {
  int32_t t, n, flag;
  if (depth > JSON_MAX_DEPTH) return unsupported(j, "ScVal nesting", depth, 1);
  if (jword(j, *o, &t) < 0) return NULL;
  *o += 1;
  switch (t) {
  case 15: case 14: case 13: { /* symbol, string, bytes */
    if (jword(j, *o, &n) < 0) return NULL;
    const unsigned char *s = jbytes(j, *o, (Py_ssize_t)(uint32_t)n);
    if (!s) return NULL;
    *o += 1 + (((Py_ssize_t)(uint32_t)n + 3) >> 2);
    return one(J_NAMES[t], t == 13 ? hex_of(s, (Py_ssize_t)(uint32_t)n) : xdr_string(s, (Py_ssize_t)(uint32_t)n));
  }
  case 3: case 4: {
    if (jword(j, *o, &n) < 0) return NULL;
    *o += 1;
    return one(J_NAMES[t], t == 3 ? PyLong_FromUnsignedLong((uint32_t)n) : PyLong_FromLong(n));
  }
  case 16: case 17: {
    if (jword(j, *o, &flag) < 0) return NULL;
    if (!flag) return unsupported(j, "absent vec/map", 0, 0);
    *o += 1;
    if (t == 17) return one(J_NAMES[17], map_entries(j, o, depth));
    if (jword(j, *o, &n) < 0) return NULL;
    *o += 1;
    PyObject *items = PyList_New(0);
    for (uint32_t k = 0; items && k < (uint32_t)n; k++) {
      PyObject *item = render(j, o, depth + 1);
      if (!item || PyList_Append(items, item) < 0) Py_CLEAR(items);
      Py_XDECREF(item);
    }
    return one(J_NAMES[16], items);
  }
  case 18: return one(J_NAMES[18], address(j, o));
  case 9: case 10: {
    PyObject *text = big_int_text(j, *o, 4, t == 10);
    *o += 4;
    return one(J_NAMES[t], text);
  }
  case 11: case 12: {
    PyObject *text = big_int_text(j, *o, 8, t == 12);
    *o += 8;
    return one(J_NAMES[t], text);
  }
  case 0: {
    if (jword(j, *o, &n) < 0) return NULL;
    *o += 1;
    return one(J_NAMES[0], PyBool_FromLong(n != 0));
  }
  case 1: Py_INCREF(J_VOID); return J_VOID;
  case 5: case 6: case 7: case 8: {
    PyObject *text = u64_text(j, *o, t == 6);
    *o += 2;
    return one(J_NAMES[t], text);
  }
  case 19: {
    int32_t exe;
    if (jword(j, *o, &exe) < 0) return NULL;
    *o += 1;
    PyObject *executable;
    if (exe == 0) {
      const unsigned char *hash = jbytes(j, *o - 1, 32);
      if (!hash) return NULL;
      *o += 8;
      executable = one(J_WASM, hex_of(hash, 32));
    } else if (exe == 1) {
      Py_INCREF(J_STELLAR_ASSET);
      executable = J_STELLAR_ASSET;
    } else {
      return unsupported(j, "ContractExecutable type", exe, 1);
    }
    if (!executable) return NULL;
    PyObject *storage;
    if (jword(j, *o, &flag) < 0) { Py_DECREF(executable); return NULL; }
    *o += 1;
    if (flag) storage = map_entries(j, o, depth);
    else { Py_INCREF(Py_None); storage = Py_None; }
    if (!storage) { Py_DECREF(executable); return NULL; }
    PyObject *instance = PyDict_New();
    if (instance && (PyDict_SetItem(instance, J_EXECUTABLE, executable) < 0 ||
                     PyDict_SetItem(instance, J_STORAGE, storage) < 0))
      Py_CLEAR(instance);
    Py_DECREF(executable);
    Py_DECREF(storage);
    return one(J_NAMES[19], instance);
  }
  case 20: Py_INCREF(J_INSTANCE_KEY); return J_INSTANCE_KEY;
  case 21: {
    PyObject *text = u64_text(j, *o, 1);
    *o += 2;
    return one(J_NAMES[21], one(J_NONCE, text));
  }
  default: return unsupported(j, "SCVal type", t, 1);
  }
}

static PyObject *py_scval_json(PyObject *m, PyObject *const *args, Py_ssize_t nargs) {
  (void)m;
  if (nargs != 5) {
    PyErr_SetString(PyExc_TypeError, "expected (xdr, offset, contract_strkey, account_strkey, Unsupported)");
    return NULL;
  }
  if (json_names() < 0) return NULL;
  Py_ssize_t at = PyLong_AsSsize_t(args[1]);
  if (at == -1 && PyErr_Occurred()) return NULL;
  Py_buffer view;
  Json j;
  if (open_words(args[0], &view, &j.c) < 0) return NULL;
  if (view.itemsize != 1 || at < 0 || at % 4) {
    PyBuffer_Release(&view);
    PyErr_SetString(PyExc_TypeError, "expected XDR bytes and an offset that is a multiple of 4");
    return NULL;
  }
  j.len = view.len;
  j.contract_strkey = args[2];
  j.account_strkey = args[3];
  j.unsupported = args[4];
  Py_ssize_t o = at / 4;
  PyObject *value = render(&j, &o, 0);
  PyBuffer_Release(&view);
  if (!value) return NULL;
  return Py_BuildValue("(Nn)", value, 4 * o);
}
"""
