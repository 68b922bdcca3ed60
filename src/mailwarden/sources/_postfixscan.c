/* mailwarden.sources._postfixscan: the analyze hot loop in C.
 *
 * One Shard object per analyze worker does, for buffers of raw syslog lines, what the
 * pure-Python reference does line by line (pipeline._shard_lines -> sources.parse_lines ->
 * pipeline.Folder.events -> sources.Correlator.feed -> pipeline.Folder.message):
 *
 *   - split lines, keep the lines of this worker's shard (pipeline.shard_of's rule);
 *   - the syslog envelope: time stamp (the caches and the inference of
 *     sources.syslog.Stamps, called back on a miss), host, program tag;
 *   - the frequent Postfix shapes (delivery status, queue active, message-id, removed,
 *     pickup, smtpd client, bounce notice), byte for byte as the regexes of
 *     sources.postfix match them; every other line (and every line that is not plain
 *     ASCII, has a NUL, is too long, or has an unusual envelope) goes back to Python
 *     (slow_line / slow_msg callbacks), whose events are fed to the same correlator here;
 *   - smtp(8)'s "connect to" lines without queue id held until their process names it
 *     (sources.postfix.ConnectClaims, before the shard filter: claims_*);
 *   - per-message correlation with the Correlator's rules (queue id reuse, horizon sweeps,
 *     the max_open cap with second-chance eviction, bounce links);
 *   - folding finished messages into aggregates and, when storing, into the row tuples of
 *     store.rows (classification and provider look-ups are called back, cached here).
 *
 * Nothing here trusts the input: every access is bounds-checked against the line length;
 * numbers too long for a C integer go to the Python path.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

#define MAX_LINE 65536
#define MAX_TEXT 600
#define Q_MIN 6
#define Q_MAX 32
#define BOUNCE_MAP_MAX 100000
#define PROG_CACHE 64

/* ------------------------------------------------------------------------------------- */
/* small helpers                                                                          */
/* ------------------------------------------------------------------------------------- */

static inline int is_digit(unsigned char c) { return c >= '0' && c <= '9'; }
static inline int is_alnum(unsigned char c)
{
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}
static inline int is_word(unsigned char c) { return is_alnum(c) || c == '_'; }
/* str.isspace() / re's \s for str patterns, restricted to ASCII */
static inline int is_uspace(unsigned char c)
{
    return c == ' ' || (c >= 9 && c <= 13) || (c >= 0x1c && c <= 0x1f);
}

static Py_ssize_t find2(const char *s, Py_ssize_t from, Py_ssize_t to, char a, char b)
{
    /* first i in [from, to-1) with s[i]==a and s[i+1]==b, else -1 */
    Py_ssize_t i = from;
    while (i + 1 < to) {
        const char *p = memchr(s + i, a, to - 1 - i);
        if (p == NULL)
            return -1;
        i = p - s;
        if (s[i + 1] == b)
            return i;
        i++;
    }
    return -1;
}

static Py_ssize_t find3(const char *s, Py_ssize_t from, Py_ssize_t to, const char *pat)
{
    Py_ssize_t i = from;
    while (i + 2 < to) {
        const char *p = memchr(s + i, pat[0], to - 2 - i);
        if (p == NULL)
            return -1;
        i = p - s;
        if (s[i + 1] == pat[1] && s[i + 2] == pat[2])
            return i;
        i++;
    }
    return -1;
}

/* no byte >= 0x80 */
static int all_ascii(const char *p, Py_ssize_t n)
{
    Py_ssize_t i = 0;
    for (; i + 8 <= n; i += 8) {
        uint64_t w;
        memcpy(&w, p + i, 8);
        if (w & 0x8080808080808080ULL)
            return 0;
    }
    for (; i < n; i++)
        if ((unsigned char)p[i] >= 0x80)
            return 0;
    return 1;
}

static inline int starts(const char *s, Py_ssize_t n, const char *lit, Py_ssize_t ln)
{
    return n >= ln && memcmp(s, lit, ln) == 0;
}
#define STARTS(s, n, lit) starts((s), (n), (lit), (Py_ssize_t)(sizeof(lit) - 1))

/* an ASCII str from bytes known to be ASCII */
static PyObject *astr(const char *p, Py_ssize_t n)
{
    PyObject *s = PyUnicode_New(n, 127);
    if (s == NULL)
        return NULL;
    if (n)
        memcpy(PyUnicode_1BYTE_DATA(s), p, n);
    return s;
}

/* The reply text with its mail addresses replaced by "<addr>": the matches of
 * store.kinds._ADDR, <[^<>\s]*@[^<>\s]*>|[\w.+=-]+@[\w-]+(?:\.[\w-]+)+, leftmost first, for
 * ASCII text (the caller passes anything else whole). Texts equal after this step normalise to
 * the same kind (store.kinds.normalise_reply begins with this step): the classification cache
 * is keyed by it, with the reply's codes and command (tests/sources/test_accel.py). */
static inline int is_w1(unsigned char c)
{
    return is_word(c) || c == '.' || c == '+' || c == '=' || c == '-';
}
static inline int is_w2(unsigned char c) { return is_word(c) || c == '-'; }

static PyObject *mask_addresses(const char *t, Py_ssize_t n)
{
    if (memchr(t, '@', n) == NULL)
        return astr(t, n);
    /* "<@>" (3 bytes) becomes "<addr>" (6): the result is at most twice as long */
    char stackbuf[1024] = {0};
    Py_ssize_t cap = 2 * n + 8;
    char *out = cap <= (Py_ssize_t)sizeof(stackbuf) ? stackbuf : PyMem_Malloc(cap);
    if (out == NULL)
        return PyErr_NoMemory();
    Py_ssize_t o = 0, i = 0;
    while (i < n) {
        unsigned char c = (unsigned char)t[i];
        if (c == '<') {
            Py_ssize_t e = i + 1;
            int at = 0;
            while (e < n && t[e] != '<' && t[e] != '>' && !is_uspace((unsigned char)t[e])) {
                if (t[e] == '@')
                    at = 1;
                e++;
            }
            if (e < n && t[e] == '>' && at) {
                memcpy(out + o, "<addr>", 6);
                o += 6;
                i = e + 1;
                continue;
            }
        }
        if (is_w1(c)) {
            Py_ssize_t r = i;
            while (r < n && is_w1((unsigned char)t[r]))
                r++;
            if (r < n && t[r] == '@') {
                Py_ssize_t d = r + 1, d0 = d;
                while (d < n && is_w2((unsigned char)t[d]))
                    d++;
                int groups = 0;
                if (d > d0) {
                    while (d + 1 < n && t[d] == '.' && is_w2((unsigned char)t[d + 1])) {
                        d++;
                        while (d < n && is_w2((unsigned char)t[d]))
                            d++;
                        groups++;
                    }
                }
                if (groups) {
                    memcpy(out + o, "<addr>", 6);
                    o += 6;
                    i = d;
                    continue;
                }
            }
            /* no match starts anywhere inside this run (same "@", same domain) */
            memcpy(out + o, t + i, r - i);
            o += r - i;
            i = r;
            continue;
        }
        out[o++] = (char)c;
        i++;
    }
    PyObject *res = astr(out, o);
    if (out != stackbuf)
        PyMem_Free(out);
    return res;
}

/* The reply fields of the commonest unique text, read the way sources.reply.parse_reply reads
 * it, or 0 when the text is anything else (the caller then asks parse_reply):
 *   host H[IP] said: DDD X.Y.Z <anything> (in reply to CMD command)
 * with H of [A-Za-z0-9._-], IP of hex digits, dots and colons, the reply code [245]DD, the
 * enhanced code [245].D{1,3}.D{1,3} followed by a space, CMD [A-Za-z][A-Za-z -]{0,30}.
 * tests/sources/test_accel.py compares it with parse_reply. */
typedef struct {
    int code;
    Py_ssize_t h0, h1, i0, i1, e0, e1, c0, c1;
} ReplyFields;

static int reply_fast(const char *t, Py_ssize_t n, ReplyFields *f)
{
    static const char tail[] = " command)";
    static const char intro[] = "(in reply to ";
    Py_ssize_t tl = sizeof(tail) - 1, il = sizeof(intro) - 1;
    if (n < 40 || memcmp(t, "host ", 5) != 0 || memcmp(t + n - tl, tail, tl) != 0)
        return 0;
    Py_ssize_t k = 5;
    while (k < n && (is_alnum((unsigned char)t[k]) || t[k] == '.' || t[k] == '_' || t[k] == '-'))
        k++;
    if (k == 5 || k >= n || t[k] != '[')
        return 0;
    f->h0 = 5;
    f->h1 = k;
    Py_ssize_t i0 = ++k;
    while (k < n && (is_digit((unsigned char)t[k]) || (t[k] >= 'a' && t[k] <= 'f') ||
                     (t[k] >= 'A' && t[k] <= 'F') || t[k] == '.' || t[k] == ':'))
        k++;
    if (k == i0 || n - k < 8 || memcmp(t + k, "] said: ", 8) != 0)
        return 0;
    f->i0 = i0;
    f->i1 = k;
    k += 8;
    /* DDD X.Y.Z and a space */
    if (n - k < 10 || (t[k] != '2' && t[k] != '4' && t[k] != '5') ||
        !is_digit((unsigned char)t[k + 1]) || !is_digit((unsigned char)t[k + 2]) ||
        t[k + 3] != ' ')
        return 0;
    f->code = (t[k] - '0') * 100 + (t[k + 1] - '0') * 10 + (t[k + 2] - '0');
    Py_ssize_t e = k + 4;
    if (t[e] != '2' && t[e] != '4' && t[e] != '5')
        return 0;
    if (t[e + 1] != '.')
        return 0;
    Py_ssize_t d = e + 2, d0 = d;
    while (d < n && is_digit((unsigned char)t[d]))
        d++;
    if (d - d0 < 1 || d - d0 > 3 || d >= n || t[d] != '.')
        return 0;
    d0 = ++d;
    while (d < n && is_digit((unsigned char)t[d]))
        d++;
    if (d - d0 < 1 || d - d0 > 3 || d >= n || t[d] != ' ')
        return 0;
    f->e0 = e;
    f->e1 = d;
    /* the command: the run of [A-Za-z -] before " command)", after "(in reply to " */
    Py_ssize_t ce = n - tl, c = ce;
    while (c > d && ((t[c - 1] >= 'a' && t[c - 1] <= 'z') || (t[c - 1] >= 'A' && t[c - 1] <= 'Z') ||
                     t[c - 1] == ' ' || t[c - 1] == '-'))
        c--;
    /* t[c - 1] must be the "(" of the intro, which the run began with ("in reply to ") */
    if (c <= d || t[c - 1] != '(' || ce - c < il - 1 + 1 || memcmp(t + c - 1, intro, il) != 0)
        return 0;
    Py_ssize_t c0 = c - 1 + il;
    Py_ssize_t cn = ce - c0;
    if (cn < 1 || cn > 31 || !((t[c0] >= 'a' && t[c0] <= 'z') || (t[c0] >= 'A' && t[c0] <= 'Z')))
        return 0;
    f->c0 = c0;
    f->c1 = ce;
    return 1;
}

/* int from 1..18 ASCII digits (caller checked) */
static long long digits_ll(const char *p, Py_ssize_t n)
{
    long long v = 0;
    for (Py_ssize_t i = 0; i < n; i++)
        v = v * 10 + (p[i] - '0');
    return v;
}

/* float(text) for text matching \d+(\.\d+)? (caller checked), correctly rounded */
static PyObject *float_of(const char *p, Py_ssize_t n)
{
    char buf[64];
    if (n < (Py_ssize_t)sizeof(buf)) {
        memcpy(buf, p, n);
        buf[n] = 0;
        double d = PyOS_string_to_double(buf, NULL, NULL);
        if (d == -1.0 && PyErr_Occurred())
            return NULL;
        return PyFloat_FromDouble(d);
    }
    PyObject *s = PyUnicode_FromStringAndSize(p, n);
    if (s == NULL)
        return NULL;
    PyObject *f = PyFloat_FromString(s);
    Py_DECREF(s);
    return f;
}

/* int(text) for ASCII digits of any length */
static PyObject *long_of(const char *p, Py_ssize_t n)
{
    if (n <= 18)
        return PyLong_FromLongLong(digits_ll(p, n));
    PyObject *s = PyUnicode_FromStringAndSize(p, n);
    if (s == NULL)
        return NULL;
    PyObject *v = PyLong_FromUnicodeObject(s, 10);
    Py_DECREF(s);
    return v;
}

/* s[:600] */
static PyObject *cut_text(PyObject *s)
{
    if (PyUnicode_GET_LENGTH(s) > MAX_TEXT)
        return PyUnicode_Substring(s, 0, MAX_TEXT);
    Py_INCREF(s);
    return s;
}

static int unicode_eq(PyObject *a, PyObject *b)
{
    if (a == b)
        return 1;
    if (PyUnicode_GET_LENGTH(a) != PyUnicode_GET_LENGTH(b))
        return 0;
    return PyUnicode_Compare(a, b) == 0;
}

/* interned constants */
static PyObject *S_empty, *S_sasl, *S_client, *S_uid, *S_bounce, *S_unknown, *S_daemon;
static PyObject *S_sent, *S_deferred, *S_bounced, *S_expired, *S_local, *S_none;
static PyObject *S_reject, *S_rcpt;

/* ------------------------------------------------------------------------------------- */
/* messages and the open table                                                            */
/* ------------------------------------------------------------------------------------- */

typedef struct {
    double ts;
    /* owned references; numbers may be Py_None */
    PyObject *rcpt, *orig, *relay, *relay_host, *relay_ip, *relay_port, *conn_use, *delay;
    PyObject *delays, *dsn, *status, *text, *code, *enhanced;
    PyObject *command; /* the reply's SMTP command ("" without reply), for the caches */
    PyObject *masked;  /* text with its addresses masked (non-successes only), or NULL */
} Att;

typedef struct Msg {
    struct Msg *hnext, *prev, *next;
    Py_hash_t hash;
    PyObject *host, *qid; /* str */
    double arrival, touched, placed;
    int okind; /* 0 unknown, 1 uid, 2 client, 3 sasl */
    PyObject *uid;        /* int or NULL */
    PyObject *client_name, *client_ip, *sasl_method, *sasl_username, *sender, *message_id;
    PyObject *user, *bounce_of; /* str, never NULL */
    PyObject *size, *nrcpt;     /* int or NULL */
    double expired_at, removed_at;
    int has_expired, has_removed;
    int in_table;
    Att *atts;
    Py_ssize_t natt, catt;
    PyObject *notices; /* list of str (notice queue ids) or NULL */
    PyObject *mx;      /* list of MxReply events (connection-level replies) or NULL */
} Msg;

enum { OK_UNKNOWN = 0, OK_UID = 1, OK_CLIENT = 2, OK_SASL = 3 };

static void att_clear(Att *a)
{
    Py_XDECREF(a->rcpt);
    Py_XDECREF(a->orig);
    Py_XDECREF(a->relay);
    Py_XDECREF(a->relay_host);
    Py_XDECREF(a->relay_ip);
    Py_XDECREF(a->relay_port);
    Py_XDECREF(a->conn_use);
    Py_XDECREF(a->delay);
    Py_XDECREF(a->delays);
    Py_XDECREF(a->dsn);
    Py_XDECREF(a->status);
    Py_XDECREF(a->text);
    Py_XDECREF(a->code);
    Py_XDECREF(a->enhanced);
    Py_XDECREF(a->command);
    Py_XDECREF(a->masked);
}

static void msg_free(Msg *m)
{
    Py_XDECREF(m->host);
    Py_XDECREF(m->qid);
    Py_XDECREF(m->uid);
    Py_XDECREF(m->client_name);
    Py_XDECREF(m->client_ip);
    Py_XDECREF(m->sasl_method);
    Py_XDECREF(m->sasl_username);
    Py_XDECREF(m->sender);
    Py_XDECREF(m->message_id);
    Py_XDECREF(m->user);
    Py_XDECREF(m->bounce_of);
    Py_XDECREF(m->size);
    Py_XDECREF(m->nrcpt);
    for (Py_ssize_t i = 0; i < m->natt; i++)
        att_clear(&m->atts[i]);
    PyMem_Free(m->atts);
    Py_XDECREF(m->notices);
    Py_XDECREF(m->mx);
    PyMem_Free(m);
}

typedef struct {
    Msg **buckets;
    size_t mask;
    Py_ssize_t count;
    Msg *head, *tail;
} Table;

static Py_hash_t key_hash(PyObject *host, const char *q, Py_ssize_t n)
{
    uint64_t h = 1469598103934665603ULL;
    for (Py_ssize_t i = 0; i < n; i++) {
        h ^= (unsigned char)q[i];
        h *= 1099511628211ULL;
    }
    Py_hash_t hh = PyObject_Hash(host); /* cached in the str */
    return (Py_hash_t)(h ^ ((uint64_t)hh * 0x9E3779B97F4A7C15ULL));
}

static int table_init(Table *t)
{
    t->mask = 1023;
    t->buckets = PyMem_Calloc(t->mask + 1, sizeof(Msg *));
    t->count = 0;
    t->head = t->tail = NULL;
    if (t->buckets == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    return 0;
}

static Msg *table_find(Table *t, PyObject *host, const char *q, Py_ssize_t n, Py_hash_t h)
{
    for (Msg *m = t->buckets[(size_t)h & t->mask]; m != NULL; m = m->hnext) {
        if (m->hash != h || PyUnicode_GET_LENGTH(m->qid) != n)
            continue;
        if (memcmp(PyUnicode_1BYTE_DATA(m->qid), q, n) != 0)
            continue;
        if (unicode_eq(m->host, host))
            return m;
    }
    return NULL;
}

static int table_grow(Table *t)
{
    size_t nm = (t->mask + 1) * 2 - 1;
    Msg **nb = PyMem_Calloc(nm + 1, sizeof(Msg *));
    if (nb == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    for (size_t i = 0; i <= t->mask; i++) {
        Msg *m = t->buckets[i];
        while (m) {
            Msg *nx = m->hnext;
            size_t b = (size_t)m->hash & nm;
            m->hnext = nb[b];
            nb[b] = m;
            m = nx;
        }
    }
    PyMem_Free(t->buckets);
    t->buckets = nb;
    t->mask = nm;
    return 0;
}

/* append at the end of the order (a new key) */
static int table_add(Table *t, Msg *m)
{
    if ((size_t)t->count >= t->mask && table_grow(t) < 0)
        return -1;
    size_t b = (size_t)m->hash & t->mask;
    m->hnext = t->buckets[b];
    t->buckets[b] = m;
    m->next = NULL;
    m->prev = t->tail;
    if (t->tail)
        t->tail->next = m;
    else
        t->head = m;
    t->tail = m;
    t->count++;
    m->in_table = 1;
    return 0;
}

static void table_unlink(Table *t, Msg *m)
{
    if (!m->in_table)
        return;
    Msg **pp = &t->buckets[(size_t)m->hash & t->mask];
    while (*pp != NULL && *pp != m)
        pp = &(*pp)->hnext;
    if (*pp == NULL)
        return;
    *pp = m->hnext;
    m->in_table = 0;
    if (m->prev)
        m->prev->next = m->next;
    else
        t->head = m->next;
    if (m->next)
        m->next->prev = m->prev;
    else
        t->tail = m->prev;
    m->prev = m->next = m->hnext = NULL;
    t->count--;
}

static void table_move_to_end(Table *t, Msg *m)
{
    if (t->tail == m)
        return;
    if (m->prev)
        m->prev->next = m->next;
    else
        t->head = m->next;
    m->next->prev = m->prev;
    m->prev = t->tail;
    m->next = NULL;
    t->tail->next = m;
    t->tail = m;
}

/* ------------------------------------------------------------------------------------- */
/* aggregates                                                                             */
/* ------------------------------------------------------------------------------------- */

typedef struct {
    Py_ssize_t recipients, delivered, deferred, bounced, expired, attempts;
    PyObject *name;  /* str */
    PyObject *kinds; /* dict kind -> KindAgg */
} ProvAgg;

typedef struct {
    Py_ssize_t messages, recipients, delivered, deferred, bounced;
    PyObject *key;       /* (kind, ident) */
    PyObject *name;      /* str */
    PyObject *providers; /* dict provider -> int */
} OrigAgg;

/* ------------------------------------------------------------------------------------- */
/* the Shard object                                                                       */
/* ------------------------------------------------------------------------------------- */

typedef struct {
    PyObject *bytes;
    PyObject *str;
    int is_postfix;
} ProgEntry;

/* the "connect to" lines one smtp process logged since it last named a queue id */
typedef struct {
    PyObject *key;   /* bytes: "host program[pid" (sources.postfix.session_key) */
    PyObject *lines; /* list of bytes: the raw lines, oldest first */
} HeldProc;

typedef struct {
    PyObject_HEAD
    /* configuration */
    int me, nshards, store, resolve_users;
    double since, until, horizon;
    Py_ssize_t max_open, batch_messages;
    PyObject *folder, *classify_row, *provider_for_host, *provider_for_domain;
    PyObject *is_postfix, *user_name, *kindagg, *program_cb, *reply_cb, *inbound_cb;
    /* per source (file) */
    PyObject *trad, *iso, *sec, *iso_cache, *host_fn, *slow_line, *slow_msg;
    PyObject *stamps, *min_cache; /* the Stamps and its minute cache (see trad_fast) */
    char memo_trad[15];
    double memo_trad_ts;
    int memo_trad_ok;
    char memo_iso[25];
    double memo_iso_base;
    int memo_iso_ok;
    PyObject *memo_host_b; /* bytes */
    PyObject *memo_host;   /* str */
    double latest;
    Py_ssize_t total, parsed, ignored, foreign, ooo;
    /* caches */
    ProgEntry progs[PROG_CACHE];
    int nprogs;
    PyObject *relays;      /* dict relay str -> (relay, host, ip, port) */
    PyObject *prov_host;   /* dict relay host -> provider */
    PyObject *prov_domain; /* dict domain -> provider (or "unknown") */
    PyObject *cls_cache;   /* dict (masked text, dsn, status, provider, code, enh, cmd) -> row */
    PyObject *reply_cache; /* dict text -> (code, enhanced, host, ip, command) */
    PyObject *users;       /* dict uid -> name */
    PyObject *uid_strs;    /* dict uid -> str(uid) */
    PyObject *small;       /* dict of interned short values (status, dsn, delays ...) */
    /* correlator */
    Table open;
    PyObject *bounce_map; /* OrderedDict (host, qid) -> original qid */
    double now, next_sweep;
    /* emitted messages, folded once the event that emitted them is applied (as the
     * Correlator returns them from feed() and the Folder folds them after) */
    Msg **pending;
    Py_ssize_t npend, cpend;
    /* fold */
    Py_ssize_t messages, recipients, attempts, outside;
    double first_ts, last_ts;
    PyObject *prov_index; /* dict name -> int */
    ProvAgg *provs;
    Py_ssize_t nprov, cprov;
    PyObject *internal; /* dict kind -> KindAgg */
    PyObject *orig_index; /* dict (kind, ident) -> int */
    OrigAgg *origs;
    Py_ssize_t norig, corig;
    /* the current store batch (borrowed from folder.batch, refreshed) */
    PyObject *batch, *b_messages, *b_attempts, *b_kinds, *b_links;
    /* connection-level replies: folder.mx_fold; held "connect to" lines (claims_*) */
    PyObject *mx_cb;
    HeldProc *held;
    Py_ssize_t nheld, cheld;
} Shard;

static void shard_drop_source(Shard *s)
{
    Py_CLEAR(s->trad);
    Py_CLEAR(s->iso);
    Py_CLEAR(s->sec);
    Py_CLEAR(s->iso_cache);
    Py_CLEAR(s->host_fn);
    Py_CLEAR(s->slow_line);
    Py_CLEAR(s->slow_msg);
    Py_CLEAR(s->stamps);
    Py_CLEAR(s->min_cache);
    Py_CLEAR(s->memo_host_b);
    Py_CLEAR(s->memo_host);
    s->memo_trad_ok = s->memo_iso_ok = 0;
}

static int refresh_batch(Shard *s)
{
    if (!s->store)
        return 0;
    PyObject *b = PyObject_GetAttrString(s->folder, "batch");
    if (b == NULL)
        return -1;
    if (b == s->batch) {
        Py_DECREF(b);
        return 0;
    }
    Py_XDECREF(s->batch);
    s->batch = b;
    Py_CLEAR(s->b_messages);
    Py_CLEAR(s->b_attempts);
    Py_CLEAR(s->b_kinds);
    Py_CLEAR(s->b_links);
    s->b_messages = PyObject_GetAttrString(b, "messages");
    s->b_attempts = PyObject_GetAttrString(b, "attempts");
    s->b_kinds = PyObject_GetAttrString(b, "kinds");
    s->b_links = PyObject_GetAttrString(b, "links");
    if (!s->b_messages || !s->b_attempts || !s->b_kinds || !s->b_links)
        return -1;
    if (!PyList_Check(s->b_messages) || !PyList_Check(s->b_attempts) ||
        !PyDict_Check(s->b_kinds) || !PyList_Check(s->b_links)) {
        PyErr_SetString(PyExc_TypeError, "folder.batch: unexpected layout");
        return -1;
    }
    return 0;
}

/* ---- provider and classification look-ups (cached; the Python side is the reference) */

static PyObject *provider_of(Shard *s, Att *a) /* new reference */
{
    PyObject *p = NULL;
    if (PyUnicode_GET_LENGTH(a->relay_host)) {
        p = PyDict_GetItemWithError(s->prov_host, a->relay_host);
        if (p != NULL)
            Py_INCREF(p);
        else {
            if (PyErr_Occurred())
                return NULL;
            p = PyObject_CallFunctionObjArgs(s->provider_for_host, a->relay_host, a->relay_ip,
                                             NULL);
            if (p == NULL)
                return NULL;
            if (!PyUnicode_Check(p)) {
                Py_DECREF(p);
                PyErr_SetString(PyExc_TypeError, "provider_for_host must return str");
                return NULL;
            }
            if (PyDict_SetItem(s->prov_host, a->relay_host, p) < 0) {
                Py_DECREF(p);
                return NULL;
            }
        }
    }
    else {
        PyObject *r = a->relay;
        Py_ssize_t n = PyUnicode_GET_LENGTH(r);
        int local = n > 0 && !unicode_eq(r, S_none) &&
                    PyUnicode_FindChar(r, '[', 0, n, 1) == -1;
        p = local ? S_local : S_empty;
        Py_INCREF(p);
    }
    if (PyUnicode_GET_LENGTH(p))
        return p;
    Py_DECREF(p);
    /* the recipient's domain: provider_for_domain looks at the part after the last "@" */
    PyObject *rc = a->rcpt;
    Py_ssize_t n = PyUnicode_GET_LENGTH(rc);
    Py_ssize_t at = PyUnicode_FindChar(rc, '@', 0, n, -1);
    if (at == -2)
        return NULL;
    PyObject *dom = at >= 0 ? PyUnicode_Substring(rc, at + 1, n) : (Py_INCREF(rc), rc);
    if (dom == NULL)
        return NULL;
    p = PyDict_GetItemWithError(s->prov_domain, dom);
    if (p != NULL) {
        Py_INCREF(p);
        Py_DECREF(dom);
        return p;
    }
    if (PyErr_Occurred()) {
        Py_DECREF(dom);
        return NULL;
    }
    p = PyObject_CallOneArg(s->provider_for_domain, rc);
    if (p == NULL) {
        Py_DECREF(dom);
        return NULL;
    }
    if (!PyUnicode_Check(p)) {
        Py_DECREF(p);
        Py_DECREF(dom);
        PyErr_SetString(PyExc_TypeError, "provider_for_domain must return str");
        return NULL;
    }
    if (PyUnicode_GET_LENGTH(p) == 0) {
        Py_DECREF(p);
        p = S_unknown;
        Py_INCREF(p);
    }
    int rc2 = PyDict_SetItem(s->prov_domain, dom, p);
    Py_DECREF(dom);
    if (rc2 < 0) {
        Py_DECREF(p);
        return NULL;
    }
    return p;
}

/* classify_row(text, dsn, status, provider) ->
 * (reason, scope, code, enhanced, command, issuer, url, cited_ip, rule, internal, sample, kind,
 *  cached); a row is kept for the texts equal to this one once their addresses are masked
 * (same normalised kind, same reply codes and command) when the Folder says it is the cached
 * decision of its kind. Returns a new reference. */
#define CR_LEN 13
static PyObject *classified(Shard *s, Att *a, PyObject *prov)
{
    PyObject *text = a->text ? a->text : S_empty;
    PyObject *masked = a->masked ? a->masked : text;
    PyObject *key = PyTuple_Pack(7, masked, a->dsn, a->status, prov, a->code, a->enhanced,
                                 a->command);
    if (key == NULL)
        return NULL;
    PyObject *hit = PyDict_GetItemWithError(s->cls_cache, key);
    if (hit != NULL || PyErr_Occurred()) {
        Py_DECREF(key);
        Py_XINCREF(hit);
        return hit;
    }
    PyObject *row = PyObject_CallFunctionObjArgs(s->classify_row, text, a->dsn, a->status, prov,
                                                 NULL);
    if (row == NULL) {
        Py_DECREF(key);
        return NULL;
    }
    if (!PyTuple_Check(row) || PyTuple_GET_SIZE(row) != CR_LEN) {
        Py_DECREF(key);
        Py_DECREF(row);
        PyErr_SetString(PyExc_TypeError, "classify_row must return a 13-tuple");
        return NULL;
    }
    int cached = PyObject_IsTrue(PyTuple_GET_ITEM(row, 12));
    int rc = cached;
    if (cached > 0 && PyDict_GET_SIZE(s->cls_cache) < 50000)
        rc = PyDict_SetItem(s->cls_cache, key, row);
    Py_DECREF(key);
    if (rc < 0) {
        Py_DECREF(row);
        return NULL;
    }
    return row;
}

static ProvAgg *prov_agg(Shard *s, PyObject *name)
{
    PyObject *ix = PyDict_GetItemWithError(s->prov_index, name);
    if (ix != NULL)
        return &s->provs[PyLong_AsSsize_t(ix)];
    if (PyErr_Occurred())
        return NULL;
    if (s->nprov == s->cprov) {
        Py_ssize_t nc = s->cprov ? s->cprov * 2 : 16;
        ProvAgg *np = PyMem_Realloc(s->provs, nc * sizeof(ProvAgg));
        if (np == NULL) {
            PyErr_NoMemory();
            return NULL;
        }
        s->provs = np;
        s->cprov = nc;
    }
    ProvAgg *p = &s->provs[s->nprov];
    memset(p, 0, sizeof(*p));
    p->kinds = PyDict_New();
    if (p->kinds == NULL)
        return NULL;
    Py_INCREF(name);
    p->name = name;
    PyObject *v = PyLong_FromSsize_t(s->nprov);
    if (v == NULL || PyDict_SetItem(s->prov_index, name, v) < 0) {
        Py_XDECREF(v);
        Py_CLEAR(p->kinds);
        Py_CLEAR(p->name);
        return NULL;
    }
    Py_DECREF(v);
    s->nprov++;
    return p;
}

static OrigAgg *orig_agg(Shard *s, PyObject *kind, PyObject *ident, PyObject *name)
{
    PyObject *key = PyTuple_Pack(2, kind, ident);
    if (key == NULL)
        return NULL;
    PyObject *ix = PyDict_GetItemWithError(s->orig_index, key);
    if (ix != NULL) {
        Py_DECREF(key);
        return &s->origs[PyLong_AsSsize_t(ix)];
    }
    if (PyErr_Occurred()) {
        Py_DECREF(key);
        return NULL;
    }
    if (s->norig == s->corig) {
        Py_ssize_t nc = s->corig ? s->corig * 2 : 16;
        OrigAgg *np = PyMem_Realloc(s->origs, nc * sizeof(OrigAgg));
        if (np == NULL) {
            Py_DECREF(key);
            PyErr_NoMemory();
            return NULL;
        }
        s->origs = np;
        s->corig = nc;
    }
    OrigAgg *o = &s->origs[s->norig];
    memset(o, 0, sizeof(*o));
    o->providers = PyDict_New();
    if (o->providers == NULL) {
        Py_DECREF(key);
        return NULL;
    }
    PyObject *v = PyLong_FromSsize_t(s->norig);
    if (v == NULL || PyDict_SetItem(s->orig_index, key, v) < 0) {
        Py_XDECREF(v);
        Py_DECREF(key);
        Py_CLEAR(o->providers);
        return NULL;
    }
    Py_DECREF(v);
    o->key = key;
    Py_INCREF(name);
    o->name = name;
    s->norig++;
    return o;
}

static int counter_add(PyObject *d, PyObject *k, Py_ssize_t n)
{
    PyObject *v = PyDict_GetItemWithError(d, k);
    Py_ssize_t have = 0;
    if (v != NULL)
        have = PyLong_AsSsize_t(v);
    else if (PyErr_Occurred())
        return -1;
    PyObject *nv = PyLong_FromSsize_t(have + n);
    if (nv == NULL)
        return -1;
    int rc = PyDict_SetItem(d, k, nv);
    Py_DECREF(nv);
    return rc;
}

static PyObject *opt_float(int has, double v)
{
    if (has)
        return PyFloat_FromDouble(v);
    Py_RETURN_NONE;
}

static inline PyObject *or_none(PyObject *o)
{
    return o ? o : Py_None;
}

/* Folder.message */
static int fold(Shard *s, Msg *m)
{
    s->messages++;
    if (m->arrival < s->first_ts)
        s->first_ts = m->arrival;
    if (m->arrival > s->last_ts)
        s->last_ts = m->arrival;
    PyObject *kind, *ident = NULL, *name;
    switch (m->okind) {
    case OK_SASL:
        kind = S_sasl;
        ident = cut_text(m->sasl_username);
        name = m->client_ip;
        break;
    case OK_CLIENT:
        kind = S_client;
        ident = m->client_ip;
        Py_INCREF(ident);
        name = m->client_name;
        break;
    case OK_UID:
        kind = S_uid;
        ident = PyDict_GetItemWithError(s->uid_strs, m->uid);
        if (ident != NULL)
            Py_INCREF(ident);
        else if (!PyErr_Occurred()) {
            ident = PyObject_Str(m->uid);
            if (ident != NULL && PyDict_GET_SIZE(s->uid_strs) < 100000 &&
                PyDict_SetItem(s->uid_strs, m->uid, ident) < 0)
                Py_CLEAR(ident);
        }
        name = m->user;
        break;
    default:
        if (PyUnicode_GET_LENGTH(m->bounce_of) ||
            (PyUnicode_GET_LENGTH(m->sender) == 0 && m->nrcpt != NULL)) {
            kind = S_bounce;
            name = S_daemon;
        }
        else {
            kind = S_unknown;
            name = S_empty;
        }
        ident = S_empty;
        Py_INCREF(ident);
    }
    if (ident == NULL)
        return -1;
    OrigAgg *origin = orig_agg(s, kind, ident, name);
    if (origin == NULL) {
        Py_DECREF(ident);
        return -1;
    }
    /* origin may move when the array grows: keep its index */
    Py_ssize_t oix = origin - s->origs;
    origin->messages++;
    Py_ssize_t mi = 0;
    int store = s->store;
    if (store) {
        mi = PyList_GET_SIZE(s->b_messages);
        PyObject *sender = cut_text(m->sender);
        PyObject *mid = sender ? cut_text(m->message_id) : NULL;
        PyObject *arr = mid ? PyFloat_FromDouble(m->arrival) : NULL;
        PyObject *exp = arr ? opt_float(m->has_expired, m->expired_at) : NULL;
        PyObject *rem = exp ? opt_float(m->has_removed, m->removed_at) : NULL;
        PyObject *row = NULL;
        if (rem)
            row = PyTuple_Pack(13, m->host, m->qid, arr, kind, ident, name, sender, mid,
                               or_none(m->size), or_none(m->nrcpt), m->bounce_of, exp, rem);
        Py_XDECREF(sender);
        Py_XDECREF(mid);
        Py_XDECREF(arr);
        Py_XDECREF(exp);
        Py_XDECREF(rem);
        if (row == NULL || PyList_Append(s->b_messages, row) < 0) {
            Py_XDECREF(row);
            Py_DECREF(ident);
            return -1;
        }
        Py_DECREF(row);
        if (m->notices) {
            for (Py_ssize_t i = 0; i < PyList_GET_SIZE(m->notices); i++) {
                PyObject *ln = PyTuple_Pack(3, m->host, PyList_GET_ITEM(m->notices, i), m->qid);
                if (ln == NULL || PyList_Append(s->b_links, ln) < 0) {
                    Py_XDECREF(ln);
                    Py_DECREF(ident);
                    return -1;
                }
                Py_DECREF(ln);
            }
        }
    }
    Py_DECREF(ident);

    /* final[recipient[:600]] = (status, provider): small arrays, insertion ordered */
    Py_ssize_t nfinal = 0;
    PyObject **f_rcpt = NULL, **f_status = NULL, **f_prov = NULL;
    PyObject *stack_r[4], *stack_s[4], *stack_p[4];
    if (m->natt <= 4) {
        f_rcpt = stack_r;
        f_status = stack_s;
        f_prov = stack_p;
    }
    else {
        f_rcpt = PyMem_Malloc(sizeof(PyObject *) * m->natt * 3);
        if (f_rcpt == NULL) {
            PyErr_NoMemory();
            return -1;
        }
        f_status = f_rcpt + m->natt;
        f_prov = f_status + m->natt;
    }
    PyObject *final_index = NULL; /* dict rcpt -> position, for many recipients */
    int err = 0;
    for (Py_ssize_t i = 0; i < m->natt && !err; i++) {
        Att *a = &m->atts[i];
        PyObject *st = a->status;
        int sent = unicode_eq(st, S_sent);
        if (!sent && !unicode_eq(st, S_deferred) && !unicode_eq(st, S_bounced) &&
            !unicode_eq(st, S_expired))
            continue; /* address verification probes */
        PyObject *prov = provider_of(s, a);
        if (prov == NULL) {
            err = 1;
            break;
        }
        ProvAgg *pa = prov_agg(s, prov);
        if (pa == NULL) {
            Py_DECREF(prov);
            err = 1;
            break;
        }
        pa->attempts++;
        s->attempts++;
        double ts = a->ts;
        PyObject *reason = S_empty, *kkey = S_empty;
        PyObject *row_ref = NULL;
        if (!sent) {
            PyObject *row = classified(s, a, prov);
            if (row == NULL) {
                Py_DECREF(prov);
                err = 1;
                break;
            }
            row_ref = row; /* released at the end of this attempt */
            reason = PyTuple_GET_ITEM(row, 0);
            PyObject *internal = PyTuple_GET_ITEM(row, 9);
            kkey = PyTuple_GET_ITEM(row, 11);
            int is_internal = PyObject_IsTrue(internal);
            PyObject *kinds = is_internal ? s->internal : pa->kinds;
            PyObject *ka = PyDict_GetItemWithError(kinds, kkey);
            PyObject *pk = NULL;
            if (ka == NULL && !PyErr_Occurred()) {
                /* KindAgg(reason, scope, code, enhanced, command, issuer, url, cited_ip, rule,
                 * sample) */
                PyObject *args = PyTuple_Pack(
                    10, PyTuple_GET_ITEM(row, 0), PyTuple_GET_ITEM(row, 1),
                    PyTuple_GET_ITEM(row, 2), PyTuple_GET_ITEM(row, 3), PyTuple_GET_ITEM(row, 4),
                    PyTuple_GET_ITEM(row, 5), PyTuple_GET_ITEM(row, 6), PyTuple_GET_ITEM(row, 7),
                    PyTuple_GET_ITEM(row, 8), PyTuple_GET_ITEM(row, 10));
                ka = args ? PyObject_Call(s->kindagg, args, NULL) : NULL;
                Py_XDECREF(args);
                if (ka == NULL || PyDict_SetItem(kinds, kkey, ka) < 0) {
                    Py_XDECREF(ka);
                    err = 1;
                }
                else {
                    Py_DECREF(ka); /* the dict holds it */
                    if (store) {
                        PyObject *tsf = PyFloat_FromDouble(ts);
                        pk = tsf ? PyTuple_Pack(2, prov, kkey) : NULL;
                        PyObject *kr = pk ? PyTuple_Pack(
                                                15, prov, kkey, PyTuple_GET_ITEM(row, 0),
                                                PyTuple_GET_ITEM(row, 1), PyTuple_GET_ITEM(row, 2),
                                                PyTuple_GET_ITEM(row, 3), PyTuple_GET_ITEM(row, 4),
                                                PyTuple_GET_ITEM(row, 5), PyTuple_GET_ITEM(row, 6),
                                                PyTuple_GET_ITEM(row, 7), PyTuple_GET_ITEM(row, 8),
                                                internal, PyTuple_GET_ITEM(row, 10), tsf, tsf)
                                          : NULL;
                        if (kr == NULL || PyDict_SetItem(s->b_kinds, pk, kr) < 0)
                            err = 1;
                        Py_XDECREF(kr);
                        Py_XDECREF(tsf);
                    }
                }
            }
            else if (ka == NULL) {
                err = 1;
            }
            else if (store) {
                pk = PyTuple_Pack(2, prov, kkey);
                int have = pk ? PyDict_Contains(s->b_kinds, pk) : -1;
                if (have < 0)
                    err = 1;
                else if (!have) {
                    static const char *names[] = {"reason", "scope", "code", "enhanced",
                                                  "command", "issuer", "url", "cited_ip",
                                                  "rule", "sample"};
                    PyObject *v[10] = {0};
                    for (int k = 0; k < 10 && !err; k++) {
                        v[k] = PyObject_GetAttrString(ka, names[k]);
                        if (v[k] == NULL)
                            err = 1;
                    }
                    PyObject *tsf = err ? NULL : PyFloat_FromDouble(ts);
                    PyObject *kr = tsf ? PyTuple_Pack(15, prov, kkey, v[0], v[1], v[2], v[3],
                                                      v[4], v[5], v[6], v[7], v[8], internal,
                                                      v[9], tsf, tsf)
                                       : NULL;
                    if (kr == NULL || PyDict_SetItem(s->b_kinds, pk, kr) < 0)
                        err = 1;
                    Py_XDECREF(kr);
                    Py_XDECREF(tsf);
                    for (int k = 0; k < 10; k++)
                        Py_XDECREF(v[k]);
                }
            }
            Py_XDECREF(pk);
            if (!err) {
                PyObject *r = PyObject_CallMethod(ka, "add", "d", ts);
                if (r == NULL)
                    err = 1;
                Py_XDECREF(r);
            }
            if (err) {
                Py_DECREF(prov);
                Py_DECREF(row_ref);
                break;
            }
        }
        PyObject *rc = cut_text(a->rcpt);
        if (rc == NULL) {
            Py_DECREF(prov);
            Py_XDECREF(row_ref);
            err = 1;
            break;
        }
        /* final[rc] = (status, prov) */
        Py_ssize_t pos = -1;
        if (final_index != NULL) {
            PyObject *p = PyDict_GetItemWithError(final_index, rc);
            if (p != NULL)
                pos = PyLong_AsSsize_t(p);
            else if (PyErr_Occurred())
                err = 1;
        }
        else {
            for (Py_ssize_t k = 0; k < nfinal; k++) {
                if (unicode_eq(f_rcpt[k], rc)) {
                    pos = k;
                    break;
                }
            }
        }
        if (!err && pos >= 0) {
            f_status[pos] = st;
            Py_DECREF(f_prov[pos]);
            Py_INCREF(prov);
            f_prov[pos] = prov;
        }
        else if (!err) {
            f_rcpt[nfinal] = rc; /* borrowed from rc, kept alive below */
            Py_INCREF(rc);
            f_status[nfinal] = st;
            Py_INCREF(prov);
            f_prov[nfinal] = prov;
            nfinal++;
            if (nfinal == 8 && final_index == NULL) {
                final_index = PyDict_New();
                for (Py_ssize_t k = 0; final_index && k < nfinal; k++) {
                    PyObject *v = PyLong_FromSsize_t(k);
                    if (v == NULL || PyDict_SetItem(final_index, f_rcpt[k], v) < 0)
                        err = 1;
                    Py_XDECREF(v);
                }
                if (final_index == NULL)
                    err = 1;
            }
            else if (final_index != NULL) {
                PyObject *v = PyLong_FromSsize_t(nfinal - 1);
                if (v == NULL || PyDict_SetItem(final_index, rc, v) < 0)
                    err = 1;
                Py_XDECREF(v);
            }
        }
        if (!err && store) {
            PyObject *mio = PyLong_FromSsize_t(mi);
            PyObject *tsf = mio ? PyFloat_FromDouble(ts) : NULL;
            PyObject *orc = tsf ? cut_text(a->orig) : NULL;
            PyObject *row = NULL;
            if (orc)
                row = PyTuple_Pack(17, mio, tsf, rc, orc, a->relay_host, a->relay_ip,
                                   a->relay_port, prov, a->delay, a->delays, a->dsn, st,
                                   a->conn_use, a->code, a->enhanced, kkey, reason);
            if (row == NULL || PyList_Append(s->b_attempts, row) < 0)
                err = 1;
            Py_XDECREF(row);
            Py_XDECREF(mio);
            Py_XDECREF(tsf);
            Py_XDECREF(orc);
        }
        Py_DECREF(rc);
        Py_DECREF(prov);
        Py_XDECREF(row_ref);
        if (ts > s->last_ts)
            s->last_ts = ts;
    }
    if (!err && m->mx != NULL && PyList_GET_SIZE(m->mx) > 0) {
        /* Folder.mx_fold(mi, replies): rare lines, the Python code does it; it returns the
         * providers it touched, which are touched here too (the same order of providers) */
        PyObject *r = PyObject_CallFunction(s->mx_cb, "nO", mi, m->mx);
        if (r == NULL || !PyList_Check(r))
            err = 1;
        for (Py_ssize_t k = 0; !err && k < PyList_GET_SIZE(r); k++)
            if (prov_agg(s, PyList_GET_ITEM(r, k)) == NULL)
                err = 1;
        if (r != NULL && !PyList_Check(r) && !PyErr_Occurred())
            PyErr_SetString(PyExc_TypeError, "mx_fold must return a list");
        Py_XDECREF(r);
    }
    if (!err) {
        int expired = m->has_expired;
        for (Py_ssize_t k = 0; k < nfinal && !err; k++) {
            PyObject *st = f_status[k], *prov = f_prov[k];
            ProvAgg *pa = prov_agg(s, prov);
            if (pa == NULL) {
                err = 1;
                break;
            }
            OrigAgg *o = &s->origs[oix];
            pa->recipients++;
            int state; /* 0 delivered, 1 bounced, 2 deferred */
            if (unicode_eq(st, S_sent))
                state = 0;
            else if (unicode_eq(st, S_bounced) || unicode_eq(st, S_expired))
                state = 1;
            else
                state = 2;
            if (state == 2 && expired) {
                state = 1;
                pa->expired++;
            }
            if (state == 0) {
                pa->delivered++;
                o->delivered++;
            }
            else if (state == 1) {
                pa->bounced++;
                o->bounced++;
            }
            else {
                pa->deferred++;
                o->deferred++;
            }
            if (counter_add(o->providers, prov, 1) < 0)
                err = 1;
        }
        if (!err) {
            s->origs[oix].recipients += nfinal;
            s->recipients += nfinal;
        }
    }
    for (Py_ssize_t k = 0; k < nfinal; k++) {
        Py_DECREF(f_rcpt[k]);
        Py_DECREF(f_prov[k]);
    }
    if (f_rcpt != stack_r)
        PyMem_Free(f_rcpt);
    Py_XDECREF(final_index);
    if (err)
        return -1;
    if (store && PyList_GET_SIZE(s->b_messages) >= s->batch_messages) {
        PyObject *r = PyObject_CallMethod(s->folder, "flush_batch", NULL);
        if (r == NULL)
            return -1;
        Py_DECREF(r);
        if (refresh_batch(s) < 0)
            return -1;
    }
    return 0;
}

/* a finished message: folded by drain() after the current event */
static int emit(Shard *s, Msg *m)
{
    if (s->npend == s->cpend) {
        Py_ssize_t nc = s->cpend ? s->cpend * 2 : 16;
        Msg **np = PyMem_Realloc(s->pending, nc * sizeof(Msg *));
        if (np == NULL) {
            msg_free(m);
            PyErr_NoMemory();
            return -1;
        }
        s->pending = np;
        s->cpend = nc;
    }
    s->pending[s->npend++] = m;
    return 0;
}

static int drain(Shard *s)
{
    int rc = 0;
    for (Py_ssize_t i = 0; i < s->npend; i++) {
        Msg *m = s->pending[i];
        if (rc == 0 && fold(s, m) < 0)
            rc = -1;
        msg_free(m);
    }
    s->npend = 0;
    return rc;
}

/* ------------------------------------------------------------------------------------- */
/* the correlator                                                                         */
/* ------------------------------------------------------------------------------------- */

static int sweep(Shard *s)
{
    double limit = s->now - s->horizon;
    Table *t = &s->open;
    while (t->head) {
        Msg *m = t->head;
        if (m->placed >= limit)
            break;
        if (m->touched >= limit) {
            m->placed = m->touched;
            table_move_to_end(t, m);
            continue;
        }
        table_unlink(t, m);
        if (emit(s, m) < 0)
            return -1;
    }
    double step = s->horizon / 10.0;
    s->next_sweep = s->now + (step < 600.0 ? step : 600.0);
    return 0;
}

static int evict_one(Shard *s)
{
    Table *t = &s->open;
    while (t->head) {
        Msg *m = t->head;
        if (m->touched > m->placed) {
            m->placed = m->touched;
            table_move_to_end(t, m);
            continue;
        }
        table_unlink(t, m);
        return emit(s, m);
    }
    return 0;
}

static Msg *start(Shard *s, PyObject *host, const char *q, Py_ssize_t n, Py_hash_t h,
                  PyObject *qid, double ts)
{
    Msg *m = PyMem_Calloc(1, sizeof(Msg));
    if (m == NULL) {
        PyErr_NoMemory();
        return NULL;
    }
    m->hash = h;
    Py_INCREF(host);
    m->host = host;
    if (qid != NULL) {
        Py_INCREF(qid);
        m->qid = qid;
    }
    else
        m->qid = astr(q, n);
    m->arrival = m->touched = m->placed = ts;
    m->okind = OK_UNKNOWN;
    PyObject **strs[] = {&m->client_name, &m->client_ip, &m->sasl_method, &m->sasl_username,
                         &m->sender, &m->message_id, &m->user, &m->bounce_of};
    for (size_t i = 0; i < sizeof(strs) / sizeof(strs[0]); i++) {
        Py_INCREF(S_empty);
        *strs[i] = S_empty;
    }
    if (m->qid == NULL) {
        msg_free(m);
        return NULL;
    }
    if (PyDict_GET_SIZE(s->bounce_map)) {
        PyObject *key = PyTuple_Pack(2, host, m->qid);
        PyObject *orig = NULL;
        if (key != NULL) {
            orig = PyDict_GetItemWithError(s->bounce_map, key);
            if (orig != NULL) {
                Py_INCREF(orig);
                if (PyObject_DelItem(s->bounce_map, key) < 0)
                    Py_CLEAR(orig);
                else {
                    Py_SETREF(m->bounce_of, orig);
                    orig = NULL;
                }
            }
        }
        Py_XDECREF(key);
        if (PyErr_Occurred()) {
            msg_free(m);
            return NULL;
        }
    }
    /* room first: the new message is never the one evicted */
    if (s->open.count >= s->max_open && evict_one(s) < 0) {
        msg_free(m);
        return NULL;
    }
    if (table_add(&s->open, m) < 0) {
        msg_free(m);
        return NULL;
    }
    return m;
}

static int msg_started(Msg *m)
{
    return m->okind != OK_UNKNOWN || m->natt > 0 || (m->mx && PyList_GET_SIZE(m->mx) > 0) ||
           m->nrcpt != NULL || m->has_removed;
}

/* advance the log clock of an event (before its queue id is looked at) */
static int log_clock(Shard *s, double ts)
{
    if (ts > s->now) {
        s->now = ts;
        if (ts >= s->next_sweep)
            return sweep(s);
    }
    return 0;
}

static PyObject *user_of(Shard *s, PyObject *uid)
{
    PyObject *name = PyDict_GetItemWithError(s->users, uid);
    if (name != NULL) {
        Py_INCREF(name);
        return name;
    }
    if (PyErr_Occurred())
        return NULL;
    name = PyObject_CallOneArg(s->user_name, uid);
    if (name == NULL)
        return NULL;
    if (!PyUnicode_Check(name)) {
        Py_DECREF(name);
        PyErr_SetString(PyExc_TypeError, "user_name must return str");
        return NULL;
    }
    if (PyDict_GET_SIZE(s->users) < 100000 && PyDict_SetItem(s->users, uid, name) < 0) {
        Py_DECREF(name);
        return NULL;
    }
    return name;
}

/* Correlator._arrive; every object argument borrowed (uid may be NULL) */
static int arrive(Shard *s, PyObject *host, const char *q, Py_ssize_t n, PyObject *qid,
                  double ts, PyObject *uid, PyObject *sender, PyObject *cname, PyObject *cip,
                  PyObject *smethod, PyObject *suser)
{
    Py_hash_t h = key_hash(host, q, n);
    Msg *m = table_find(&s->open, host, q, n, h);
    if (m != NULL && msg_started(m)) {
        table_unlink(&s->open, m);
        if (emit(s, m) < 0)
            return -1;
        m = NULL;
    }
    if (m == NULL) {
        m = start(s, host, q, n, h, qid, ts);
        if (m == NULL)
            return -1;
    }
    else
        m->touched = ts;
    if (uid != NULL) {
        Py_INCREF(uid);
        Py_XSETREF(m->uid, uid);
        if (m->okind == OK_UNKNOWN)
            m->okind = OK_UID;
        if (s->resolve_users && PyUnicode_GET_LENGTH(m->user) == 0) {
            PyObject *name = user_of(s, uid);
            if (name == NULL)
                return -1;
            Py_SETREF(m->user, name);
        }
    }
    if (PyUnicode_GET_LENGTH(cip) || PyUnicode_GET_LENGTH(cname)) {
        Py_INCREF(cname);
        Py_SETREF(m->client_name, cname);
        Py_INCREF(cip);
        Py_SETREF(m->client_ip, cip);
        if (m->okind == OK_UNKNOWN || m->okind == OK_UID)
            m->okind = OK_CLIENT;
    }
    if (PyUnicode_GET_LENGTH(suser) || PyUnicode_GET_LENGTH(smethod)) {
        Py_INCREF(smethod);
        Py_SETREF(m->sasl_method, smethod);
        Py_INCREF(suser);
        Py_SETREF(m->sasl_username, suser);
        m->okind = OK_SASL;
    }
    if (PyUnicode_GET_LENGTH(sender) && PyUnicode_GET_LENGTH(m->sender) == 0) {
        Py_INCREF(sender);
        Py_SETREF(m->sender, sender);
    }
    return 0;
}

/* the open message of a queue id event, started when missing */
static Msg *slot_of(Shard *s, PyObject *host, const char *q, Py_ssize_t n, PyObject *qid,
                    double ts)
{
    Py_hash_t h = key_hash(host, q, n);
    Msg *m = table_find(&s->open, host, q, n, h);
    if (m == NULL)
        return start(s, host, q, n, h, qid, ts);
    m->touched = ts;
    return m;
}

static int add_attempt(Msg *m, Att *a) /* steals the references in a */
{
    if (m->natt == m->catt) {
        Py_ssize_t nc = m->catt ? m->catt * 2 : 2;
        Att *na = PyMem_Realloc(m->atts, nc * sizeof(Att));
        if (na == NULL) {
            att_clear(a);
            PyErr_NoMemory();
            return -1;
        }
        m->atts = na;
        m->catt = nc;
    }
    m->atts[m->natt++] = *a;
    return 0;
}

static int notice(Shard *s, Msg *m, PyObject *host, PyObject *qid, PyObject *nqid)
{
    if (m->notices == NULL) {
        m->notices = PyList_New(0);
        if (m->notices == NULL)
            return -1;
    }
    if (PyList_Append(m->notices, nqid) < 0)
        return -1;
    const char *nq;
    Py_ssize_t nn;
    nq = PyUnicode_AsUTF8AndSize(nqid, &nn);
    if (nq == NULL)
        return -1;
    Msg *other = NULL;
    if (PyUnicode_IS_ASCII(nqid))
        other = table_find(&s->open, host, nq, nn, key_hash(host, nq, nn));
    if (other != NULL) {
        Py_INCREF(qid);
        Py_SETREF(other->bounce_of, qid);
        return 0;
    }
    PyObject *key = PyTuple_Pack(2, host, nqid);
    if (key == NULL)
        return -1;
    int rc = PyObject_SetItem(s->bounce_map, key, qid);
    Py_DECREF(key);
    if (rc < 0)
        return -1;
    if (PyDict_GET_SIZE(s->bounce_map) > BOUNCE_MAP_MAX) {
        PyObject *r = PyObject_CallMethod(s->bounce_map, "popitem", "O", Py_False);
        if (r == NULL)
            return -1;
        Py_DECREF(r);
    }
    return 0;
}

/* ---- events from the Python path (Correlator.feed) ----------------------------------- */

static PyObject *T_Arrival, *T_Delivery, *T_QueueActive, *T_MessageIdSeen, *T_Removed;
static PyObject *T_BounceNotice, *T_Expired, *T_Held, *T_InboundReject, *T_MxReply;

static PyObject *attr(PyObject *o, const char *name)
{
    return PyObject_GetAttrString(o, name);
}

static int str_attr(PyObject *o, const char *name, PyObject **out)
{
    PyObject *v = attr(o, name);
    if (v == NULL)
        return -1;
    if (!PyUnicode_Check(v)) {
        Py_DECREF(v);
        PyErr_Format(PyExc_TypeError, "event field %s must be str", name);
        return -1;
    }
    *out = v;
    return 0;
}

static int feed_event(Shard *s, PyObject *ev)
{
    PyObject *tso = attr(ev, "ts");
    if (tso == NULL)
        return -1;
    double ts = PyFloat_AsDouble(tso);
    Py_DECREF(tso);
    if (ts == -1.0 && PyErr_Occurred())
        return -1;
    if (log_clock(s, ts) < 0)
        return -1;
    PyObject *qid = NULL, *host = NULL;
    int rc = -1;
    if (str_attr(ev, "qid", &qid) < 0)
        return -1;
    if (PyUnicode_GET_LENGTH(qid) == 0) {
        Py_DECREF(qid);
        return 0;
    }
    if (str_attr(ev, "host", &host) < 0) {
        Py_DECREF(qid);
        return -1;
    }
    Py_ssize_t n;
    const char *q = PyUnicode_AsUTF8AndSize(qid, &n);
    if (q == NULL)
        goto done;
    if (!PyUnicode_IS_ASCII(qid)) {
        /* queue ids are ASCII by construction of the parser; anything else is not ours */
        PyErr_SetString(PyExc_ValueError, "queue id is not ASCII");
        goto done;
    }
    PyObject *cls = (PyObject *)Py_TYPE(ev);
    if (cls == T_Arrival) {
        PyObject *uid = attr(ev, "uid"), *sender = NULL, *cn = NULL, *ci = NULL, *sm = NULL,
                 *su = NULL;
        if (uid && str_attr(ev, "sender", &sender) == 0 &&
            str_attr(ev, "client_name", &cn) == 0 && str_attr(ev, "client_ip", &ci) == 0 &&
            str_attr(ev, "sasl_method", &sm) == 0 && str_attr(ev, "sasl_username", &su) == 0)
            rc = arrive(s, host, q, n, qid, ts, uid == Py_None ? NULL : uid, sender, cn, ci, sm,
                        su);
        Py_XDECREF(uid);
        Py_XDECREF(sender);
        Py_XDECREF(cn);
        Py_XDECREF(ci);
        Py_XDECREF(sm);
        Py_XDECREF(su);
        goto done;
    }
    Py_hash_t h = key_hash(host, q, n);
    Msg *m = table_find(&s->open, host, q, n, h);
    if (m == NULL) {
        int belongs = cls == T_Delivery || cls == T_QueueActive || cls == T_MessageIdSeen ||
                      cls == T_BounceNotice || cls == T_Expired || cls == T_Held ||
                      cls == T_InboundReject || cls == T_MxReply;
        if (!belongs) {
            rc = 0;
            goto done;
        }
        m = start(s, host, q, n, h, qid, ts);
        if (m == NULL)
            goto done;
    }
    else
        m->touched = ts;
    if (cls == T_Delivery) {
        Att a;
        memset(&a, 0, sizeof(a));
        a.ts = ts;
        PyObject *reply = NULL;
        if (str_attr(ev, "recipient", &a.rcpt) < 0 || str_attr(ev, "orig_recipient", &a.orig) < 0 ||
            str_attr(ev, "relay", &a.relay) < 0 || str_attr(ev, "relay_host", &a.relay_host) < 0 ||
            str_attr(ev, "relay_ip", &a.relay_ip) < 0 ||
            (a.relay_port = attr(ev, "relay_port")) == NULL ||
            (a.conn_use = attr(ev, "conn_use")) == NULL || (a.delay = attr(ev, "delay")) == NULL ||
            str_attr(ev, "delays", &a.delays) < 0 || str_attr(ev, "dsn", &a.dsn) < 0 ||
            str_attr(ev, "status", &a.status) < 0 || str_attr(ev, "text", &a.text) < 0 ||
            (reply = attr(ev, "reply")) == NULL) {
            att_clear(&a);
            goto done;
        }
        if (reply == Py_None) {
            a.code = Py_None;
            Py_INCREF(Py_None);
            a.enhanced = S_empty;
            Py_INCREF(S_empty);
            a.command = S_empty;
            Py_INCREF(S_empty);
        }
        else if ((a.code = attr(reply, "code")) == NULL ||
                 str_attr(reply, "enhanced", &a.enhanced) < 0 ||
                 str_attr(reply, "command", &a.command) < 0) {
            Py_DECREF(reply);
            att_clear(&a);
            goto done;
        }
        Py_DECREF(reply);
        if (PyUnicode_IS_ASCII(a.text))
            a.masked = mask_addresses((const char *)PyUnicode_1BYTE_DATA(a.text),
                                      PyUnicode_GET_LENGTH(a.text));
        else {
            a.masked = a.text;
            Py_INCREF(a.masked);
        }
        if (a.masked == NULL) {
            att_clear(&a);
            goto done;
        }
        rc = add_attempt(m, &a);
    }
    else if (cls == T_MxReply) {
        if (m->mx == NULL && (m->mx = PyList_New(0)) == NULL)
            goto done;
        rc = PyList_Append(m->mx, ev);
    }
    else if (cls == T_QueueActive) {
        PyObject *sender = NULL, *size = NULL, *nrcpt = NULL;
        if (str_attr(ev, "sender", &sender) == 0 && (size = attr(ev, "size")) != NULL &&
            (nrcpt = attr(ev, "nrcpt")) != NULL) {
            if (PyUnicode_GET_LENGTH(m->sender) == 0) {
                Py_INCREF(sender);
                Py_SETREF(m->sender, sender);
            }
            Py_XSETREF(m->size, size == Py_None ? NULL : (Py_INCREF(size), size));
            Py_XSETREF(m->nrcpt, nrcpt == Py_None ? NULL : (Py_INCREF(nrcpt), nrcpt));
            rc = 0;
        }
        Py_XDECREF(sender);
        Py_XDECREF(size);
        Py_XDECREF(nrcpt);
    }
    else if (cls == T_MessageIdSeen) {
        PyObject *mid = NULL, *resent = attr(ev, "resent");
        if (resent != NULL && str_attr(ev, "message_id", &mid) == 0) {
            int r = PyObject_IsTrue(resent);
            if (r >= 0) {
                if (!r || PyUnicode_GET_LENGTH(m->message_id) == 0) {
                    Py_INCREF(mid);
                    Py_SETREF(m->message_id, mid);
                }
                rc = 0;
            }
        }
        Py_XDECREF(resent);
        Py_XDECREF(mid);
    }
    else if (cls == T_Removed) {
        m->removed_at = ts;
        m->has_removed = 1;
        table_unlink(&s->open, m);
        rc = emit(s, m);
    }
    else if (cls == T_BounceNotice) {
        PyObject *nq = NULL;
        if (str_attr(ev, "notice_qid", &nq) == 0) {
            rc = notice(s, m, host, qid, nq);
            Py_DECREF(nq);
        }
    }
    else if (cls == T_Expired) {
        PyObject *sender = NULL;
        if (str_attr(ev, "sender", &sender) == 0) {
            m->expired_at = ts;
            m->has_expired = 1;
            if (PyUnicode_GET_LENGTH(m->sender) == 0) {
                Py_INCREF(sender);
                Py_SETREF(m->sender, sender);
            }
            Py_DECREF(sender);
            rc = 0;
        }
    }
    else if (cls == T_InboundReject) {
        PyObject *action = NULL, *program = NULL, *stage = NULL;
        if (str_attr(ev, "action", &action) == 0 && str_attr(ev, "program", &program) == 0 &&
            str_attr(ev, "stage", &stage) == 0) {
            const char *ac = PyUnicode_AsUTF8(action);
            const char *pg = PyUnicode_AsUTF8(program);
            const char *sg = PyUnicode_AsUTF8(stage);
            if (ac && pg && sg) {
                size_t pl = strlen(pg);
                int cleanup = pl >= 8 && strcmp(pg + pl - 8, "/cleanup") == 0;
                int whole = strcmp(ac, "discard") == 0 || strcmp(ac, "milter-discard") == 0 ||
                            ((strcmp(ac, "reject") == 0 || strcmp(ac, "milter-reject") == 0) &&
                             (cleanup || strcmp(sg, "DATA") == 0 ||
                              strcmp(sg, "END-OF-MESSAGE") == 0));
                rc = 0;
                if (whole) {
                    table_unlink(&s->open, m);
                    rc = emit(s, m);
                }
            }
        }
        Py_XDECREF(action);
        Py_XDECREF(program);
        Py_XDECREF(stage);
    }
    else
        rc = 0; /* Held and other events only touch the message */
done:
    Py_XDECREF(qid);
    Py_XDECREF(host);
    return rc;
}

/* ------------------------------------------------------------------------------------- */
/* line parsing                                                                           */
/* ------------------------------------------------------------------------------------- */

/* program tag -> (program str, is_postfix) as PostfixParser.tag; 1 found, 0 not a tag, -1 err */
static int tag_info(Shard *s, const char *t, Py_ssize_t n, PyObject **prog, int *is_pf)
{
    if (n < 2 || t[n - 1] != ':')
        return 0;
    Py_ssize_t pl;
    if (t[n - 2] == ']') {
        Py_ssize_t lb = -1;
        for (Py_ssize_t i = n - 3; i >= 0; i--) {
            if (t[i] == '[') {
                lb = i;
                break;
            }
        }
        if (lb <= 0)
            return 0;
        Py_ssize_t nd = n - 2 - (lb + 1);
        if (nd < 1 || nd > 10)
            return 0;
        for (Py_ssize_t i = lb + 1; i < n - 2; i++)
            if (!is_digit((unsigned char)t[i]))
                return 0;
        pl = lb;
    }
    else
        pl = n - 1;
    if (pl < 1 || pl > 100)
        return 0;
    for (Py_ssize_t i = 0; i < pl; i++) {
        unsigned char c = (unsigned char)t[i];
        if (!(is_alnum(c) || c == '_' || c == '.' || c == '@' || c == '+' || c == '/' ||
              c == '-'))
            return 0;
    }
    for (int i = 0; i < s->nprogs; i++) {
        ProgEntry *e = &s->progs[i];
        if (PyBytes_GET_SIZE(e->bytes) == pl && memcmp(PyBytes_AS_STRING(e->bytes), t, pl) == 0) {
            *prog = e->str;
            *is_pf = e->is_postfix;
            return 1;
        }
    }
    PyObject *str = astr(t, pl);
    if (str == NULL)
        return -1;
    PyObject *r = PyObject_CallOneArg(s->is_postfix, str);
    int pf = r ? PyObject_IsTrue(r) : -1;
    Py_XDECREF(r);
    if (pf < 0) {
        Py_DECREF(str);
        return -1;
    }
    if (s->nprogs < PROG_CACHE) {
        ProgEntry *e = &s->progs[s->nprogs];
        e->bytes = PyBytes_FromStringAndSize(t, pl);
        if (e->bytes == NULL) {
            Py_DECREF(str);
            return -1;
        }
        e->str = str;
        e->is_postfix = pf;
        s->nprogs++;
        *prog = str;
    }
    else {
        /* not cached: the caller gets a borrowed reference that must stay alive; keep it in
         * the small-values dict (bounded by the number of distinct programs) */
        if (PyDict_SetItem(s->small, str, str) < 0) {
            Py_DECREF(str);
            return -1;
        }
        *prog = str;
        Py_DECREF(str);
    }
    *is_pf = pf;
    return 1;
}

/* is_postfix for a program str from the Python path */
static int program_is_postfix(Shard *s, PyObject *prog)
{
    for (int i = 0; i < s->nprogs; i++)
        if (unicode_eq(s->progs[i].str, prog))
            return s->progs[i].is_postfix;
    PyObject *r = PyObject_CallOneArg(s->is_postfix, prog);
    int pf = r ? PyObject_IsTrue(r) : -1;
    Py_XDECREF(r);
    return pf;
}

/* a small repeated value ("sent", "2.0.0", "0.1/0.02/0/0.04") as a shared str */
static PyObject *small_str(Shard *s, const char *p, Py_ssize_t n)
{
    PyObject *v = astr(p, n);
    if (v == NULL || n > 24)
        return v;
    PyObject *have = PyDict_GetItemWithError(s->small, v);
    if (have != NULL) {
        Py_INCREF(have);
        Py_DECREF(v);
        return have;
    }
    if (PyErr_Occurred() || (PyDict_GET_SIZE(s->small) < 4096 && PyDict_SetItem(s->small, v, v) < 0)) {
        Py_DECREF(v);
        return NULL;
    }
    return v;
}

static PyObject *host_of(Shard *s, const char *p, Py_ssize_t n)
{
    if (s->memo_host_b && PyBytes_GET_SIZE(s->memo_host_b) == n &&
        memcmp(PyBytes_AS_STRING(s->memo_host_b), p, n) == 0)
        return s->memo_host;
    PyObject *b = PyBytes_FromStringAndSize(p, n);
    if (b == NULL)
        return NULL;
    PyObject *h = PyObject_CallOneArg(s->host_fn, b);
    if (h == NULL) {
        Py_DECREF(b);
        return NULL;
    }
    if (!PyUnicode_Check(h)) {
        Py_DECREF(b);
        Py_DECREF(h);
        PyErr_SetString(PyExc_TypeError, "host() must return str");
        return NULL;
    }
    Py_XSETREF(s->memo_host_b, b);
    Py_XSETREF(s->memo_host, h);
    return h;
}

static int month_of(const char *p)
{
    static const char months[] = "JanFebMarAprMayJunJulAugSepOctNovDec";
    for (int i = 0; i < 12; i++)
        if (memcmp(p, months + 3 * i, 3) == 0)
            return i + 1;
    return 0;
}

static int two_digits(const char *p, int space_ok)
{
    if (is_digit((unsigned char)p[1]) &&
        (is_digit((unsigned char)p[0]) || (space_ok && p[0] == ' ')))
        return (p[0] == ' ' ? 0 : (p[0] - '0') * 10) + (p[1] - '0');
    return -1;
}

/* Stamps._trad_miss for its common case: the year known, the month of the previous stamp, the
 * minute already computed (Stamps._min). Returns 1 with *ts (and Stamps._latest updated as
 * _trad_miss does), 0 when Python must decide, -1 on error. The stamp is not put into
 * Stamps.sec: that is a pure cache (a repeated miss of such a stamp gives the same time and
 * changes nothing), and its ~100k entries per day of log cost ~10 MB per worker. */
static int trad_fast(Shard *s, const char *p, double *ts)
{
    int month = month_of(p);
    if (!month || p[3] != ' ' || p[6] != ' ' || p[9] != ':' || p[12] != ':')
        return 0;
    int day = two_digits(p + 4, 1), hour = two_digits(p + 7, 0);
    int minute = two_digits(p + 10, 0), sec = two_digits(p + 13, 0);
    if (day < 1 || day > 31 || hour < 0 || hour > 23 || minute < 0 || minute > 59 || sec < 0 ||
        sec > 60)
        return 0;
    PyObject *year = PyObject_GetAttrString(s->stamps, "_year");
    if (year == NULL)
        return -1;
    int known = year != Py_None;
    Py_DECREF(year);
    if (!known)
        return 0;
    PyObject *lm = PyObject_GetAttrString(s->stamps, "_last_month");
    if (lm == NULL)
        return -1;
    long last_month = PyLong_AsLong(lm);
    Py_DECREF(lm);
    if (last_month == -1 && PyErr_Occurred())
        return -1;
    if (last_month != month)
        return 0;
    PyObject *mkey = PyBytes_FromStringAndSize(p, 12);
    if (mkey == NULL)
        return -1;
    PyObject *base = PyDict_GetItemWithError(s->min_cache, mkey);
    Py_DECREF(mkey);
    if (base == NULL)
        return PyErr_Occurred() ? -1 : 0;
    double b = PyFloat_AsDouble(base);
    if (b == -1.0 && PyErr_Occurred())
        return -1;
    double t = b + sec;
    PyObject *lat = PyObject_GetAttrString(s->stamps, "_latest");
    if (lat == NULL)
        return -1;
    double latest = PyFloat_AsDouble(lat);
    Py_DECREF(lat);
    if (latest == -1.0 && PyErr_Occurred())
        return -1;
    PyObject *tf = PyFloat_FromDouble(t);
    if (tf == NULL)
        return -1;
    int rc = t > latest ? PyObject_SetAttrString(s->stamps, "_latest", tf) : 0;
    Py_DECREF(tf);
    if (rc < 0)
        return -1;
    *ts = t;
    return 1;
}

/* the time stamp of a line on the fast path: 1 ok (*ts, *at), 0 not on the fast path, -1 error;
 * *asked is set when the Stamps were called (a cache miss): the reference then reads the line
 * with Envelope.split, which the Python path must do too if the line leaves the fast path */
static int stamp_of(Shard *s, const char *r, Py_ssize_t n, double *ts, Py_ssize_t *at,
                    int *asked)
{
    if (n > 0 && is_digit((unsigned char)r[0])) {
        /* rsyslog RFC 3339 "2026-11-27T17:31:17.507827+00:00 " */
        if (n < 34 || (r[26] != '+' && r[26] != '-') || r[32] != ' ' || r[19] != '.')
            return 0;
        long frac = 0;
        for (int i = 20; i < 26; i++) {
            if (!is_digit((unsigned char)r[i]))
                return 0;
            frac = frac * 10 + (r[i] - '0');
        }
        char key[25];
        memcpy(key, r, 19);
        memcpy(key + 19, r + 26, 6);
        double base;
        if (s->memo_iso_ok && memcmp(key, s->memo_iso, 25) == 0)
            base = s->memo_iso_base;
        else {
            PyObject *k = PyBytes_FromStringAndSize(key, 25);
            if (k == NULL)
                return -1;
            PyObject *b = PyDict_GetItemWithError(s->iso_cache, k);
            if (b == NULL) {
                if (PyErr_Occurred()) {
                    Py_DECREF(k);
                    return -1;
                }
                /* a miss: Stamps.iso parses and caches the base */
                *asked = 1;
                PyObject *stamp = PyBytes_FromStringAndSize(r, 32);
                PyObject *v = stamp ? PyObject_CallOneArg(s->iso, stamp) : NULL;
                Py_XDECREF(stamp);
                if (v == NULL) {
                    Py_DECREF(k);
                    return -1;
                }
                int none = v == Py_None;
                Py_DECREF(v);
                if (none) {
                    Py_DECREF(k);
                    return 0;
                }
                b = PyDict_GetItemWithError(s->iso_cache, k);
                if (b == NULL) {
                    Py_DECREF(k);
                    return PyErr_Occurred() ? -1 : 0;
                }
            }
            Py_DECREF(k);
            base = PyFloat_AsDouble(b);
            if (base == -1.0 && PyErr_Occurred())
                return -1;
            memcpy(s->memo_iso, key, 25);
            s->memo_iso_base = base;
            s->memo_iso_ok = 1;
        }
        *ts = base + (double)frac / 1e6;
        *at = 33;
        return 1;
    }
    if (n < 17 || r[15] != ' ')
        return 0;
    if (s->memo_trad_ok && memcmp(r, s->memo_trad, 15) == 0) {
        *ts = s->memo_trad_ts;
        *at = 16;
        return 1;
    }
    PyObject *k = PyBytes_FromStringAndSize(r, 15);
    if (k == NULL)
        return -1;
    PyObject *v = PyDict_GetItemWithError(s->sec, k);
    double d;
    int fr = 0; /* 1: trad_fast read it into d (v stays NULL) */
    if (v != NULL)
        Py_INCREF(v);
    else if (PyErr_Occurred()) {
        Py_DECREF(k);
        return -1;
    }
    else {
        *asked = 1;
        fr = trad_fast(s, r, &d);
        if (fr < 0) {
            Py_DECREF(k);
            return -1;
        }
    }
    if (v == NULL && !fr) {
        v = PyObject_CallOneArg(s->trad, k);
        if (v == NULL) {
            Py_DECREF(k);
            return -1;
        }
        if (v == Py_None) {
            Py_DECREF(v);
            Py_DECREF(k);
            return 0;
        }
        /* only a cached stamp may be reused for the next line without asking again */
        int cached = PyDict_Contains(s->sec, k);
        if (cached < 0) {
            Py_DECREF(v);
            Py_DECREF(k);
            return -1;
        }
        if (!cached) {
            /* the hour repeated at the end of summer time and the like: Python decides */
            Py_DECREF(v);
            Py_DECREF(k);
            s->memo_trad_ok = 0;
            return 0;
        }
    }
    Py_DECREF(k);
    if (v != NULL) {
        d = PyFloat_AsDouble(v);
        Py_DECREF(v);
        if (d == -1.0 && PyErr_Occurred())
            return -1;
    }
    memcpy(s->memo_trad, r, 15);
    s->memo_trad_ts = d;
    s->memo_trad_ok = 1;
    *ts = d;
    *at = 16;
    return 1;
}

/* the queue id a Postfix message p[0:n] starts with (up to its first ": ", 6..32 alnum
 * bytes): its length, 0 when there is none, -1 for NOQUEUE */
static Py_ssize_t queue_id_len(const char *p, Py_ssize_t n)
{
    Py_ssize_t c = find2(p, 0, n, ':', ' ');
    if (c < Q_MIN || c > Q_MAX)
        return 0;
    for (Py_ssize_t i = 0; i < c; i++)
        if (!is_alnum((unsigned char)p[i]))
            return 0;
    return c == 7 && memcmp(p, "NOQUEUE", 7) == 0 ? -1 : c;
}

static Py_ssize_t rfind_lit(const char *t, Py_ssize_t from, Py_ssize_t to, const char *lit,
                           Py_ssize_t ln)
{
    for (Py_ssize_t i = to - ln; i >= from; i--)
        if (t[i] == lit[0] && memcmp(t + i, lit, ln) == 0)
            return i;
    return -1;
}

/* smtpd's commonest refusal, read as PostfixParser._action reads it, or 0 (Python reads it):
 *   NOQUEUE: reject: RCPT from N[IP]: DDD X.Y.Z text; from=<s> to=<r> proto=P helo=<h>
 * N without brackets or white space, no port; the text's reply code [245]DD and enhanced code
 * followed by a space, its body single-spaced, without the code's digits (no continuation
 * lines to fold); s, r and h without '>'. The fields go to Folder.inbound_parts. */
static int noqueue(Shard *s, double ts, PyObject *host, const char *m, Py_ssize_t n)
{
    static const char head[] = "NOQUEUE: reject: RCPT from ";
    Py_ssize_t hl = sizeof(head) - 1;
    if (n < hl + 40 || memcmp(m, head, hl) != 0 || m[n - 1] != '>')
        return 0;
    Py_ssize_t k = hl, n0 = k;
    while (k < n && m[k] != '[' && m[k] != ']' && !is_uspace((unsigned char)m[k]))
        k++;
    if (k >= n || m[k] != '[')
        return 0;
    Py_ssize_t n1 = k, i0 = ++k;
    while (k < n && m[k] != ']')
        k++;
    if (k + 2 >= n || m[k + 1] != ':' || m[k + 2] != ' ')
        return 0;
    Py_ssize_t i1 = k, b0 = k + 3; /* body: text; from=<...> ... */
    Py_ssize_t sep = rfind_lit(m, b0, n, "; from=<", 8);
    if (sep < 0)
        return 0;
    Py_ssize_t t0 = b0, t1 = sep;
    /* the tail: from=<s> to=<r> proto=P helo=<h> */
    Py_ssize_t p = sep + 8, f0 = p;
    while (p < n && m[p] != '>')
        p++;
    Py_ssize_t f1 = p;
    if (!STARTS(m + p, n - p, "> to=<"))
        return 0;
    p += 6;
    Py_ssize_t r0 = p;
    while (p < n && m[p] != '>')
        p++;
    Py_ssize_t r1 = p;
    if (!STARTS(m + p, n - p, "> proto="))
        return 0;
    p += 8;
    Py_ssize_t p0 = p;
    while (p < n && m[p] != ',' && !is_uspace((unsigned char)m[p]))
        p++;
    Py_ssize_t p1 = p;
    if (p1 == p0 || !STARTS(m + p, n - p, " helo=<"))
        return 0;
    p += 7;
    Py_ssize_t e0 = p;
    while (p < n && m[p] != '>')
        p++;
    if (p != n - 1)
        return 0;
    Py_ssize_t e1 = p;
    /* split_code(text): DDD X.Y.Z body */
    const char *t = m + t0;
    Py_ssize_t tn = t1 - t0;
    if (tn < 12 || (t[0] != '2' && t[0] != '4' && t[0] != '5') || !is_digit((unsigned char)t[1]) ||
        !is_digit((unsigned char)t[2]) || t[3] != ' ' || (t[4] != '2' && t[4] != '4' && t[4] != '5') ||
        t[5] != '.')
        return 0;
    Py_ssize_t d = 6, d0 = d;
    while (d < tn && is_digit((unsigned char)t[d]))
        d++;
    if (d - d0 < 1 || d - d0 > 3 || d >= tn || t[d] != '.')
        return 0;
    d0 = ++d;
    while (d < tn && is_digit((unsigned char)t[d]))
        d++;
    if (d - d0 < 1 || d - d0 > 3 || d + 1 >= tn || t[d] != ' ')
        return 0;
    Py_ssize_t x1 = d; /* end of the enhanced code */
    Py_ssize_t c0 = d + 1; /* the body, folded: single spaces inside, none around */
    if (t[c0] == ' ' || t[tn - 1] == ' ')
        return 0;
    for (Py_ssize_t i = c0; i < tn; i++) {
        unsigned char ch = (unsigned char)t[i];
        if ((is_uspace(ch) && ch != ' ') || (ch == ' ' && t[i + 1] == ' '))
            return 0;
        if (i + 2 < tn && t[i] == t[0] && t[i + 1] == t[1] && t[i + 2] == t[2])
            return 0; /* the code again: continuation lines are Python's */
    }
    s->parsed++;
    if (!(s->since <= ts && ts < s->until)) {
        s->outside++;
        return 1;
    }
    PyObject *v[10] = {0};
    v[0] = PyFloat_FromDouble(ts);
    v[1] = astr(m + n0, n1 - n0);
    v[2] = astr(m + i0, i1 - i0);
    v[3] = PyLong_FromLong((t[0] - '0') * 100 + (t[1] - '0') * 10 + (t[2] - '0'));
    v[4] = small_str(s, t + 4, x1 - 4);
    v[5] = astr(t + c0, tn - c0);
    v[6] = astr(t, tn);
    v[7] = astr(m + f0, f1 - f0);
    v[8] = astr(m + r0, r1 - r0);
    v[9] = astr(m + e0, e1 - e0);
    int err = 0;
    for (int i = 0; i < 10; i++)
        if (v[i] == NULL)
            err = 1;
    PyObject *r = NULL;
    if (!err)
        r = PyObject_CallFunctionObjArgs(s->inbound_cb, v[0], host, S_reject, S_rcpt, v[1], v[2],
                                         v[3], v[4], v[5], v[6], v[7], v[8], v[9], NULL);
    for (int i = 0; i < 10; i++)
        Py_XDECREF(v[i]);
    if (r == NULL)
        return -1;
    Py_DECREF(r);
    return refresh_batch(s) < 0 ? -1 : 1;
}

/* a hot line of a known shape: counted as parsed; 0 when outside the period (counted), else
 * the log clock advanced: 1, or -1 on error */
static inline int take(Shard *s, double ts)
{
    s->parsed++;
    if (!(s->since <= ts && ts < s->until)) {
        s->outside++;
        return 0;
    }
    return log_clock(s, ts) < 0 ? -1 : 1;
}

/* the hot shapes; returns 1 handled, 0 -> Python, -1 error */
static int hot(Shard *s, double ts, PyObject *host, const char *msg, Py_ssize_t n)
{
    int w;
    /* c = msg.find(b": "), 6 <= c <= 32, queue id alnum, not NOQUEUE (the first ": " is
     * past the end of a queue id when it is not within Q_MAX + 2 bytes) */
    Py_ssize_t c = queue_id_len(msg, n < Q_MAX + 2 ? n : Q_MAX + 2);
    if (c == 0)
        return 0;
    if (c < 0)
        return noqueue(s, ts, host, msg, n);
    const char *q = msg;
    Py_ssize_t qn = c;
    const char *rest = msg + c + 2;
    Py_ssize_t rn = n - c - 2;
    if (rn < 4)
        return 0;

    if (memcmp(rest, "to=<", 4) == 0) {
        /* _DELIVERY */
        Py_ssize_t p = 4, e;
        for (e = p; e < rn && rest[e] != '>'; e++)
            ;
        if (e + 2 >= rn || rest[e + 1] != ',' || rest[e + 2] != ' ')
            return 0;
        Py_ssize_t to0 = p, to1 = e;
        p = e + 3;
        Py_ssize_t or0 = -1, or1 = -1;
        if (STARTS(rest + p, rn - p, "orig_to=<")) {
            Py_ssize_t b = p + 9;
            for (e = b; e < rn && rest[e] != '>'; e++)
                ;
            if (e + 2 >= rn || rest[e + 1] != ',' || rest[e + 2] != ' ')
                return 0;
            or0 = b;
            or1 = e;
            p = e + 3;
        }
        if (!STARTS(rest + p, rn - p, "relay="))
            return 0;
        Py_ssize_t rl0 = p + 6;
        for (e = rl0; e < rn && rest[e] != ','; e++)
            ;
        if (e + 1 >= rn || rest[e + 1] != ' ')
            return 0;
        Py_ssize_t rl1 = e;
        p = e + 2;
        Py_ssize_t cu0 = -1, cu1 = -1;
        if (STARTS(rest + p, rn - p, "conn_use=")) {
            Py_ssize_t b = p + 9;
            for (e = b; e < rn && is_digit((unsigned char)rest[e]); e++)
                ;
            if (e == b || e + 1 >= rn || rest[e] != ',' || rest[e + 1] != ' ')
                return 0;
            cu0 = b;
            cu1 = e;
            p = e + 2;
        }
        if (!STARTS(rest + p, rn - p, "delay="))
            return 0;
        Py_ssize_t dl0 = p + 6;
        for (e = dl0; e < rn && is_digit((unsigned char)rest[e]); e++)
            ;
        if (e == dl0)
            return 0;
        if (e + 1 < rn && rest[e] == '.' && is_digit((unsigned char)rest[e + 1])) {
            for (e = e + 1; e < rn && is_digit((unsigned char)rest[e]); e++)
                ;
        }
        if (e + 1 >= rn || rest[e] != ',' || rest[e + 1] != ' ')
            return 0;
        Py_ssize_t dl1 = e;
        p = e + 2;
        if (!STARTS(rest + p, rn - p, "delays="))
            return 0;
        Py_ssize_t ds0 = p + 7;
        for (e = ds0; e < rn && (is_digit((unsigned char)rest[e]) || rest[e] == '.' ||
                                 rest[e] == '/');
             e++)
            ;
        if (e == ds0 || e + 1 >= rn || rest[e] != ',' || rest[e + 1] != ' ')
            return 0;
        Py_ssize_t ds1 = e;
        p = e + 2;
        Py_ssize_t dn0 = -1, dn1 = -1;
        if (STARTS(rest + p, rn - p, "dsn=")) {
            Py_ssize_t b = p + 4, k = b;
            int okd = 0;
            if (k < rn && is_digit((unsigned char)rest[k]) && k + 1 < rn && rest[k + 1] == '.') {
                k += 2;
                Py_ssize_t d0 = k;
                while (k < rn && is_digit((unsigned char)rest[k]))
                    k++;
                if (k - d0 >= 1 && k - d0 <= 3 && k < rn && rest[k] == '.') {
                    k++;
                    Py_ssize_t d1 = k;
                    while (k < rn && is_digit((unsigned char)rest[k]))
                        k++;
                    if (k - d1 >= 1 && k - d1 <= 3 && k + 1 < rn && rest[k] == ',' &&
                        rest[k + 1] == ' ')
                        okd = 1;
                }
            }
            if (!okd)
                return 0; /* "dsn=" that is not the optional group: the regex fails */
            dn0 = b;
            dn1 = k;
            p = k + 2;
        }
        if (!STARTS(rest + p, rn - p, "status="))
            return 0;
        Py_ssize_t st0 = p + 7;
        for (e = st0; e < rn && ((rest[e] >= 'a' && rest[e] <= 'z') || rest[e] == '-'); e++)
            ;
        if (e == st0)
            return 0;
        Py_ssize_t st1 = e;
        Py_ssize_t tx0 = -1, tx1 = -1;
        if (e < rn) {
            if (rn - e < 3 || rest[e] != ' ' || rest[e + 1] != '(' || rest[rn - 1] != ')')
                return 0;
            tx0 = e + 2;
            tx1 = rn - 1;
        }
        /* the text's reply: none, the 250 acceptance read inline, or PostfixParser.reply
         * (its fields cached here by the text) */
        int sent = st1 - st0 == 4 && memcmp(rest + st0, "sent", 4) == 0;
        Py_ssize_t tn = tx0 >= 0 ? tx1 - tx0 : 0;
        const char *tp = rest + tx0;
        int fast250 = tn >= 10 && memcmp(tp, "250 ", 4) == 0 && tp[5] == '.' && tp[9] == ' ';
        if ((w = take(s, ts)) <= 0)
            return w ? -1 : 1;
        Att a;
        memset(&a, 0, sizeof(a));
        a.ts = ts;
        PyObject *rh_reply = NULL, *ri_reply = NULL; /* owned */
        ReplyFields rf;
        int bad = 0;
        if (tn == 0) {
            a.code = Py_None;
            Py_INCREF(Py_None);
            a.enhanced = S_empty;
            Py_INCREF(S_empty);
            a.command = S_empty;
            Py_INCREF(S_empty);
        }
        else if (fast250) {
            a.code = PyLong_FromLong(250);
            a.enhanced = small_str(s, tp + 4, 5);
            a.command = S_empty;
            Py_INCREF(S_empty);
            if (!sent) {
                a.text = astr(tp, tn);
                a.masked = mask_addresses(tp, tn);
                bad = a.text == NULL || a.masked == NULL;
            }
            bad = bad || a.code == NULL || a.enhanced == NULL;
        }
        else if (reply_fast(tp, tn, &rf)) {
            a.code = PyLong_FromLong(rf.code);
            a.enhanced = small_str(s, tp + rf.e0, rf.e1 - rf.e0);
            a.command = small_str(s, tp + rf.c0, rf.c1 - rf.c0);
            rh_reply = small_str(s, tp + rf.h0, rf.h1 - rf.h0);
            ri_reply = small_str(s, tp + rf.i0, rf.i1 - rf.i0);
            if (!sent) {
                a.text = astr(tp, tn);
                a.masked = a.text ? mask_addresses(tp, tn) : NULL;
                bad = a.masked == NULL;
            }
            bad = bad || !a.code || !a.enhanced || !a.command || !rh_reply || !ri_reply;
        }
        else {
            a.text = astr(tp, tn);
            a.masked = a.text && !sent ? mask_addresses(tp, tn) : NULL;
            PyObject *ent = a.text ? PyDict_GetItemWithError(s->reply_cache, a.text) : NULL;
            if (!sent && a.masked == NULL)
                bad = 1;
            if (a.text == NULL || (ent == NULL && PyErr_Occurred()))
                bad = 1;
            else if (ent == NULL) {
                PyObject *reply = PyObject_CallOneArg(s->reply_cb, a.text);
                PyObject *v[5] = {0};
                static const char *names[5] = {"code", "enhanced", "host", "ip", "command"};
                for (int k = 0; reply && k < 5; k++) {
                    v[k] = attr(reply, names[k]);
                    if (v[k] == NULL || (k && !PyUnicode_Check(v[k]))) {
                        if (v[k])
                            PyErr_SetString(PyExc_TypeError, "reply fields must be str");
                        bad = 1;
                        break;
                    }
                }
                if (reply == NULL)
                    bad = 1;
                Py_XDECREF(reply);
                if (!bad) {
                    ent = PyTuple_Pack(5, v[0], v[1], v[2], v[3], v[4]);
                    if (ent && PyDict_GET_SIZE(s->reply_cache) >= 50000)
                        PyDict_Clear(s->reply_cache);
                    if (ent == NULL || PyDict_SetItem(s->reply_cache, a.text, ent) < 0)
                        bad = 1;
                    Py_XDECREF(ent); /* the cache holds it */
                }
                for (int k = 0; k < 5; k++)
                    Py_XDECREF(v[k]);
            }
            if (!bad) {
                a.code = PyTuple_GET_ITEM(ent, 0);
                a.enhanced = PyTuple_GET_ITEM(ent, 1);
                a.command = PyTuple_GET_ITEM(ent, 4);
                Py_INCREF(a.code);
                Py_INCREF(a.enhanced);
                Py_INCREF(a.command);
                /* hold the host and ip while the tuple may leave the cache */
                rh_reply = PyTuple_GET_ITEM(ent, 2);
                ri_reply = PyTuple_GET_ITEM(ent, 3);
                Py_INCREF(rh_reply);
                Py_INCREF(ri_reply);
            }
            if (sent) {
                Py_CLEAR(a.text);
                Py_CLEAR(a.masked);
            }
        }
        if (bad) {
            att_clear(&a);
            Py_XDECREF(rh_reply);
            Py_XDECREF(ri_reply);
            return -1;
        }
        int err = 0;
        /* relay -> (host, ip, port), cached */
        PyObject *relay = astr(rest + rl0, rl1 - rl0);
        PyObject *ent = relay ? PyDict_GetItemWithError(s->relays, relay) : NULL;
        if (relay == NULL || (ent == NULL && PyErr_Occurred()))
            err = 1;
        else if (ent == NULL) {
            /* _RELAY: host[ip] or host[ip]:port, host without brackets */
            const char *r = rest + rl0;
            Py_ssize_t L = rl1 - rl0, k = 0;
            PyObject *rh, *ri, *rp;
            while (k < L && r[k] != '[' && r[k] != ']')
                k++;
            Py_ssize_t h1 = k, i0 = -1, i1 = -1, p0 = -1;
            if (k < L && r[k] == '[') {
                Py_ssize_t j = k + 1;
                while (j < L && r[j] != ']')
                    j++;
                if (j < L) {
                    Py_ssize_t after = j + 1;
                    if (after == L) {
                        i0 = k + 1;
                        i1 = j;
                    }
                    else if (r[after] == ':' && after + 1 < L) {
                        Py_ssize_t d = after + 1;
                        while (d < L && is_digit((unsigned char)r[d]))
                            d++;
                        if (d == L) {
                            i0 = k + 1;
                            i1 = j;
                            p0 = after + 1;
                        }
                    }
                }
            }
            if (i0 >= 0) {
                rh = astr(r, h1);
                ri = astr(r + i0, i1 - i0);
                rp = p0 >= 0 ? long_of(r + p0, L - p0) : (Py_INCREF(Py_None), Py_None);
            }
            else {
                rh = S_empty;
                ri = S_empty;
                rp = Py_None;
                Py_INCREF(rh);
                Py_INCREF(ri);
                Py_INCREF(rp);
            }
            if (rh && ri && rp) {
                PyObject *tup = PyTuple_Pack(4, relay, rh, ri, rp);
                if (tup && PyDict_GET_SIZE(s->relays) > 20000)
                    PyDict_Clear(s->relays);
                if (tup == NULL || PyDict_SetItem(s->relays, relay, tup) < 0)
                    err = 1;
                ent = tup;
                Py_XDECREF(tup); /* borrowed from the dict now */
            }
            else
                err = 1;
            Py_XDECREF(rh);
            Py_XDECREF(ri);
            Py_XDECREF(rp);
        }
        if (!err) {
            a.relay = PyTuple_GET_ITEM(ent, 0);
            a.relay_host = PyTuple_GET_ITEM(ent, 1);
            a.relay_ip = PyTuple_GET_ITEM(ent, 2);
            a.relay_port = PyTuple_GET_ITEM(ent, 3);
            if (PyUnicode_GET_LENGTH(a.relay_host) == 0 && rh_reply &&
                PyUnicode_GET_LENGTH(rh_reply)) {
                a.relay_host = rh_reply;
                a.relay_ip = ri_reply;
            }
            Py_INCREF(a.relay);
            Py_INCREF(a.relay_host);
            Py_INCREF(a.relay_ip);
            Py_INCREF(a.relay_port);
        }
        Py_XDECREF(relay);
        Py_XDECREF(rh_reply);
        Py_XDECREF(ri_reply);
        if (!err) {
            a.rcpt = astr(rest + to0, to1 - to0);
            if (s->store) {
                a.orig = or0 >= 0 ? astr(rest + or0, or1 - or0) : (Py_INCREF(S_empty), S_empty);
                a.conn_use =
                    cu0 >= 0 ? long_of(rest + cu0, cu1 - cu0) : (Py_INCREF(Py_None), Py_None);
                a.delay = float_of(rest + dl0, dl1 - dl0);
                a.delays = astr(rest + ds0, ds1 - ds0);
            }
            else { /* only the store rows read these */
                a.orig = S_empty;
                a.delays = S_empty;
                a.conn_use = Py_None;
                a.delay = Py_None;
                Py_INCREF(S_empty);
                Py_INCREF(S_empty);
                Py_INCREF(Py_None);
                Py_INCREF(Py_None);
            }
            a.dsn = dn0 >= 0 ? small_str(s, rest + dn0, dn1 - dn0) : (Py_INCREF(S_empty), S_empty);
            a.status = small_str(s, rest + st0, st1 - st0);
            if (!a.rcpt || !a.orig || !a.conn_use || !a.delay || !a.delays || !a.dsn || !a.status)
                err = 1;
        }
        if (err) {
            att_clear(&a);
            return -1;
        }
        Msg *m = slot_of(s, host, q, qn, NULL, ts);
        if (m == NULL) {
            att_clear(&a);
            return -1;
        }
        return add_attempt(m, &a) < 0 ? -1 : 1;
    }

    if (rn == 7 && memcmp(rest, "removed", 7) == 0) {
        if ((w = take(s, ts)) <= 0)
            return w ? -1 : 1;
        Msg *m = table_find(&s->open, host, q, qn, key_hash(host, q, qn));
        if (m == NULL)
            return 1;
        m->removed_at = ts;
        m->has_removed = 1;
        table_unlink(&s->open, m);
        return emit(s, m) < 0 ? -1 : 1;
    }

    if (memcmp(rest, "from", 4) == 0) {
        /* _QACTIVE: from=<(.*?)>, size=(\d+), nrcpt=(\d+) \(queue active\)$
         * _EXPIRED: from=<(.*?)>, status=(?:force-)?expired, returned to sender$ */
        static const char tail[] = " (queue active)";
        static const char exp1[] = ">, status=expired, returned to sender";
        static const char exp2[] = ">, status=force-expired, returned to sender";
        Py_ssize_t tl = sizeof(tail) - 1, e1 = sizeof(exp1) - 1, e2 = sizeof(exp2) - 1;
        Py_ssize_t se, sz0 = 0, sz1 = 0, nr0 = 0, nr1 = 0; /* se: the sender's ">" */
        int expired = 0;
        if (!STARTS(rest, rn, "from=<"))
            return 0;
        if (rn >= 6 + tl && memcmp(rest + rn - tl, tail, tl) == 0) {
            Py_ssize_t k = rn - tl;
            nr1 = k;
            while (k > 0 && is_digit((unsigned char)rest[k - 1]))
                k--;
            nr0 = k;
            if (nr1 == nr0 || nr1 - nr0 > 18 || k < 8 || memcmp(rest + k - 8, ", nrcpt=", 8) != 0)
                return 0;
            k -= 8;
            sz1 = k;
            while (k > 0 && is_digit((unsigned char)rest[k - 1]))
                k--;
            sz0 = k;
            if (sz1 == sz0 || sz1 - sz0 > 18 || k < 8 || memcmp(rest + k - 8, ">, size=", 8) != 0)
                return 0;
            se = k - 8;
            if (se < 6)
                return 0;
        }
        else if (rn >= 6 + e1 && memcmp(rest + rn - e1, exp1, e1) == 0)
            se = rn - e1, expired = 1;
        else if (rn >= 6 + e2 && memcmp(rest + rn - e2, exp2, e2) == 0)
            se = rn - e2, expired = 1;
        else
            return 0;
        if ((w = take(s, ts)) <= 0)
            return w ? -1 : 1;
        Msg *m = slot_of(s, host, q, qn, NULL, ts);
        if (m == NULL)
            return -1;
        if (expired) {
            m->expired_at = ts;
            m->has_expired = 1;
        }
        if (PyUnicode_GET_LENGTH(m->sender) == 0) {
            PyObject *snd = astr(rest + 6, se - 6);
            if (snd == NULL)
                return -1;
            Py_SETREF(m->sender, snd);
        }
        if (expired)
            return 1;
        PyObject *sz = PyLong_FromLongLong(digits_ll(rest + sz0, sz1 - sz0));
        PyObject *nr = PyLong_FromLongLong(digits_ll(rest + nr0, nr1 - nr0));
        if (!sz || !nr) {
            Py_XDECREF(sz);
            Py_XDECREF(nr);
            return -1;
        }
        Py_XSETREF(m->size, sz);
        Py_XSETREF(m->nrcpt, nr);
        return 1;
    }

    if (memcmp(rest, "mess", 4) == 0) {
        if (!STARTS(rest, rn, "message-id=<") || rn < 13 || rest[rn - 1] != '>')
            return 0;
        if ((w = take(s, ts)) <= 0)
            return w ? -1 : 1;
        Msg *m = slot_of(s, host, q, qn, NULL, ts);
        if (m == NULL)
            return -1;
        PyObject *mid = astr(rest + 12, rn - 13);
        if (mid == NULL)
            return -1;
        Py_SETREF(m->message_id, mid);
        return 1;
    }

    if (memcmp(rest, "uid=", 4) == 0) {
        /* _PICKUP: uid=(\d+) from=<(.*)>$ */
        Py_ssize_t k = 4;
        while (k < rn && is_digit((unsigned char)rest[k]))
            k++;
        if (k == 4 || k - 4 > 18 || !STARTS(rest + k, rn - k, " from=<") || rest[rn - 1] != '>' ||
            rn < k + 8)
            return 0;
        if ((w = take(s, ts)) <= 0)
            return w ? -1 : 1;
        PyObject *uid = PyLong_FromLongLong(digits_ll(rest + 4, k - 4));
        PyObject *snd = uid ? astr(rest + k + 7, rn - 1 - (k + 7)) : NULL;
        int rc = snd ? arrive(s, host, q, qn, NULL, ts, uid, snd, S_empty, S_empty, S_empty,
                              S_empty)
                     : -1;
        Py_XDECREF(uid);
        Py_XDECREF(snd);
        return rc < 0 ? -1 : 1;
    }

    if (memcmp(rest, "clie", 4) == 0) {
        /* _CLIENT: client=(name: [^\[\]\s]*)\[(ip: [^\]]*)\](?::(\d+))?(kv: .*)$ */
        if (!STARTS(rest, rn, "client="))
            return 0;
        Py_ssize_t k = 7;
        while (k < rn && rest[k] != '[' && rest[k] != ']' && !is_uspace((unsigned char)rest[k]))
            k++;
        if (k >= rn || rest[k] != '[')
            return 0;
        Py_ssize_t n0 = 7, n1 = k, i0 = k + 1;
        k = i0;
        while (k < rn && rest[k] != ']')
            k++;
        if (k >= rn)
            return 0;
        Py_ssize_t i1 = k;
        k++;
        if (k + 1 < rn && rest[k] == ':' && is_digit((unsigned char)rest[k + 1])) {
            k++;
            while (k < rn && is_digit((unsigned char)rest[k]))
                k++;
        }
        if ((w = take(s, ts)) <= 0)
            return w ? -1 : 1;
        /* kv = rest[k:]; "." does not match "\n" (none in a line) */
        PyObject *sm = S_empty, *su = S_empty;
        Py_INCREF(sm);
        Py_INCREF(su);
        /* dict(re.findall(r", (\w+)=([^,]*)", kv)): the last value of a key wins */
        Py_ssize_t p = k;
        int err = 0;
        while (p + 1 < rn && !err) {
            if (rest[p] == ',' && rest[p + 1] == ' ') {
                Py_ssize_t w0 = p + 2, w = w0;
                while (w < rn && is_word((unsigned char)rest[w]))
                    w++;
                if (w > w0 && w < rn && rest[w] == '=') {
                    Py_ssize_t v0 = w + 1, v = v0;
                    while (v < rn && rest[v] != ',')
                        v++;
                    Py_ssize_t kl = w - w0;
                    if (kl == 11 && memcmp(rest + w0, "sasl_method", 11) == 0) {
                        PyObject *x = astr(rest + v0, v - v0);
                        if (x == NULL)
                            err = 1;
                        else
                            Py_SETREF(sm, x);
                    }
                    else if (kl == 13 && memcmp(rest + w0, "sasl_username", 13) == 0) {
                        PyObject *x = astr(rest + v0, v - v0);
                        if (x == NULL)
                            err = 1;
                        else
                            Py_SETREF(su, x);
                    }
                    p = v;
                    continue;
                }
            }
            p++;
        }
        if (err) {
            Py_DECREF(sm);
            Py_DECREF(su);
            return -1;
        }
        PyObject *cn = astr(rest + n0, n1 - n0);
        PyObject *ci = cn ? astr(rest + i0, i1 - i0) : NULL;
        int rc = ci ? arrive(s, host, q, qn, NULL, ts, NULL, S_empty, cn, ci, sm, su) : -1;
        Py_XDECREF(cn);
        Py_XDECREF(ci);
        Py_DECREF(sm);
        Py_DECREF(su);
        return rc < 0 ? -1 : 1;
    }

    if (memcmp(rest, "send", 4) == 0 || memcmp(rest, "post", 4) == 0) {
        /* _NOTICE */
        Py_ssize_t k;
        if (STARTS(rest, rn, "sender "))
            k = 7;
        else if (STARTS(rest, rn, "postmaster "))
            k = 11;
        else
            return 0;
        /* the kind is not needed by the correlator or the fold, only the shape */
        if (STARTS(rest + k, rn - k, "non-delivery"))
            k += 12;
        else if (STARTS(rest + k, rn - k, "delivery status"))
            k += 15;
        else if (STARTS(rest + k, rn - k, "delay"))
            k += 5;
        else if (STARTS(rest + k, rn - k, "success"))
            k += 7;
        else
            return 0;
        if (!STARTS(rest + k, rn - k, " notification: "))
            return 0;
        k += 15;
        Py_ssize_t nq = rn - k;
        if (nq < 6 || nq > 32)
            return 0;
        for (Py_ssize_t i = k; i < rn; i++)
            if (!is_alnum((unsigned char)rest[i]))
                return 0;
        if ((w = take(s, ts)) <= 0)
            return w ? -1 : 1;
        Msg *m = slot_of(s, host, q, qn, NULL, ts);
        if (m == NULL)
            return -1;
        PyObject *nqid = astr(rest + k, nq);
        if (nqid == NULL)
            return -1;
        int rc = notice(s, m, host, m->qid, nqid);
        Py_DECREF(nqid);
        return rc < 0 ? -1 : 1;
    }
    return 0;
}

/* pipeline.shard_of (i: the first "]: " or -1) */
static int shard_of_line(Shard *s, const char *raw, Py_ssize_t n, Py_ssize_t i)
{
    Py_ssize_t j = -1;
    if (i >= 0) {
        Py_ssize_t lo = i + 9, hi = i + 36;
        if (hi > n)
            hi = n;
        if (lo < hi)
            j = find2(raw, lo, hi, ':', ' ');
    }
    int sh = 0;
    if (j > 0) {
        if (j >= 7 && memcmp(raw + j - 7, "NOQUEUE", 7) == 0)
            sh = (int)((n + (unsigned char)raw[i > 0 ? i - 1 : n - 1]) % s->nshards);
        else
            sh = ((unsigned char)raw[j - 1]) % s->nshards;
    }
    return sh;
}

/* the body of a line from start, without its line end */
static Py_ssize_t body_end(const char *raw, Py_ssize_t n)
{
    if (n > 0 && raw[n - 1] == '\n')
        n -= (n > 1 && raw[n - 2] == '\r') ? 2 : 1;
    return n;
}

/* one line of this shard (see line()) */
static int line_body(Shard *s, const char *raw, Py_ssize_t n)
{
    s->total++;
    double ts = 0;
    Py_ssize_t at = 0;
    int fast = n <= MAX_LINE && memchr(raw, 0, n) == NULL;
    PyObject *host = NULL, *program = NULL;
    PyObject *pyhost = NULL, *pyprog = NULL, *pymsg = NULL; /* owned, from slow_line */
    const char *msg = NULL;
    Py_ssize_t mn = 0;
    int is_pf = 0, asked = 0;
    if (fast) {
        int r = stamp_of(s, raw, n, &ts, &at, &asked);
        if (r < 0)
            return -1;
        fast = r;
    }
    if (fast) {
        /* raw[at : eol].split(b" ", 2) must give three parts */
        Py_ssize_t end = body_end(raw, n);
        const char *sp1 = at < end ? memchr(raw + at, ' ', end - at) : NULL;
        const char *sp2 = sp1 ? memchr(sp1 + 1, ' ', raw + end - sp1 - 1) : NULL;
        if (sp2 == NULL)
            fast = 0;
        else {
            const char *tg = sp1 + 1;
            int r = tag_info(s, tg, sp2 - tg, &program, &is_pf);
            if (r < 0)
                return -1;
            if (r == 0)
                fast = 0; /* syslogd tags and junk: Python names them */
            else {
                host = host_of(s, raw + at, sp1 - (raw + at));
                if (host == NULL)
                    return -1;
                msg = sp2 + 1;
                mn = raw + end - msg;
            }
        }
    }
    if (!fast) {
        /* the envelope in Python (Envelope.split, unparsed lines, syslogd) */
        s->memo_trad_ok = 0;
        s->memo_iso_ok = 0;
        PyObject *b = PyBytes_FromStringAndSize(raw, n);
        if (b == NULL)
            return -1;
        PyObject *r = PyObject_CallFunctionObjArgs(s->slow_line, b, asked ? Py_True : Py_False,
                                                   NULL);
        Py_DECREF(b);
        if (r == NULL)
            return -1;
        if (r == Py_None) {
            Py_DECREF(r);
            return 0;
        }
        if (!PyTuple_Check(r) || PyTuple_GET_SIZE(r) != 4 ||
            !PyUnicode_Check(PyTuple_GET_ITEM(r, 1)) || !PyUnicode_Check(PyTuple_GET_ITEM(r, 2)) ||
            !PyBytes_Check(PyTuple_GET_ITEM(r, 3))) {
            Py_DECREF(r);
            PyErr_SetString(PyExc_TypeError, "slow_line must return (ts, host, program, msg)");
            return -1;
        }
        ts = PyFloat_AsDouble(PyTuple_GET_ITEM(r, 0));
        if (ts == -1.0 && PyErr_Occurred()) {
            Py_DECREF(r);
            return -1;
        }
        pyhost = PyTuple_GET_ITEM(r, 1);
        pyprog = PyTuple_GET_ITEM(r, 2);
        pymsg = PyTuple_GET_ITEM(r, 3);
        Py_INCREF(pyhost);
        Py_INCREF(pyprog);
        Py_INCREF(pymsg);
        Py_DECREF(r);
        host = pyhost;
        program = pyprog;
        msg = PyBytes_AS_STRING(pymsg);
        mn = PyBytes_GET_SIZE(pymsg);
        is_pf = program_is_postfix(s, program);
        if (is_pf < 0)
            goto fail;
    }
    if (ts < s->latest - 1.0)
        s->ooo++;
    else if (ts > s->latest)
        s->latest = ts;
    if (!is_pf) {
        s->foreign++;
        PyObject *r = PyObject_CallOneArg(s->program_cb, program);
        if (r == NULL)
            goto fail;
        Py_DECREF(r);
        goto ok;
    }
    if (mn >= 8 && ((memcmp(msg, "connect ", 8) == 0 && !(mn >= 11 && memcmp(msg + 8, "to ", 3) == 0)) ||
                    memcmp(msg, "disconne", 8) == 0)) {
        s->ignored++;
        goto ok;
    }
    int handled = 0;
    if (all_ascii(msg, mn)) {
        handled = hot(s, ts, host, msg, mn);
        if (handled < 0)
            goto fail;
    }
    if (!handled) {
        PyObject *b = PyBytes_FromStringAndSize(raw, n);
        PyObject *mb = b ? (pymsg ? (Py_INCREF(pymsg), pymsg) : PyBytes_FromStringAndSize(msg, mn))
                         : NULL;
        PyObject *tsf = mb ? PyFloat_FromDouble(ts) : NULL;
        PyObject *ev = NULL;
        if (tsf)
            ev = PyObject_CallFunctionObjArgs(s->slow_msg, b, tsf, host, program, mb, NULL);
        Py_XDECREF(b);
        Py_XDECREF(mb);
        Py_XDECREF(tsf);
        if (ev == NULL)
            goto fail;
        if (refresh_batch(s) < 0) {
            Py_DECREF(ev);
            goto fail;
        }
        if (ev != Py_None && feed_event(s, ev) < 0) {
            Py_DECREF(ev);
            goto fail;
        }
        Py_DECREF(ev);
    }
ok:
    Py_XDECREF(pyhost);
    Py_XDECREF(pyprog);
    Py_XDECREF(pymsg);
    return drain(s);
fail:
    Py_XDECREF(pyhost);
    Py_XDECREF(pyprog);
    Py_XDECREF(pymsg);
    drain(s);
    return -1;
}

/* ---- smtp(8)'s "connect to" lines (sources.postfix.ConnectClaims, byte for byte) -------- */

#define MAX_HELD_PER_PROCESS 32
#define MAX_HELD_PROCESSES 4096

/* session_key: "host program[pid" of a line whose tag ends at i, for .../smtp[ and .../lmtp[;
 * 1 with [*ks, *ks + *kn) set, 0 for other programs */
static int session_key(const char *raw, Py_ssize_t i, Py_ssize_t *ks, Py_ssize_t *kn)
{
    Py_ssize_t k = -1, b = -1, h = -1;
    for (Py_ssize_t x = i - 1; x >= 0; x--)
        if (raw[x] == ' ') {
            k = x;
            break;
        }
    if (k < 0)
        return 0;
    for (Py_ssize_t x = i - 1; x >= k; x--)
        if (raw[x] == '[') {
            b = x;
            break;
        }
    if (b < 5 || !(memcmp(raw + b - 5, "/smtp", 5) == 0 || memcmp(raw + b - 5, "/lmtp", 5) == 0))
        return 0;
    for (Py_ssize_t x = k - 1; x >= 0; x--)
        if (raw[x] == ' ') {
            h = x;
            break;
        }
    if (h < 0)
        return 0;
    *ks = h + 1;
    *kn = i - h - 1;
    return 1;
}

static Py_ssize_t held_find(Shard *s, const char *k, Py_ssize_t kn)
{
    for (Py_ssize_t x = 0; x < s->nheld; x++) {
        PyObject *key = s->held[x].key;
        if (PyBytes_GET_SIZE(key) == kn && memcmp(PyBytes_AS_STRING(key), k, kn) == 0)
            return x;
    }
    return -1;
}

static void held_remove(Shard *s, Py_ssize_t x) /* the caller owns the entry's references */
{
    memmove(&s->held[x], &s->held[x + 1], (s->nheld - x - 1) * sizeof(HeldProc));
    s->nheld--;
}

static int lines_as_they_are(Shard *s, PyObject *lines);

/* the held lines of process x go on unclaimed, its entry removed first */
static int held_release(Shard *s, Py_ssize_t x)
{
    HeldProc hp = s->held[x];
    held_remove(s, x);
    int rc = lines_as_they_are(s, hp.lines);
    Py_DECREF(hp.key);
    Py_DECREF(hp.lines);
    return rc;
}

/* a held line going on as it is (unclaimed): the shard filter, then line_body */
static int unclaimed(Shard *s, PyObject *b)
{
    const char *r = PyBytes_AS_STRING(b);
    Py_ssize_t n = PyBytes_GET_SIZE(b);
    if (s->nshards > 1 && shard_of_line(s, r, n, find3(r, 0, n, "]: ")) != s->me)
        return 0;
    return line_body(s, r, n);
}

static int lines_as_they_are(Shard *s, PyObject *lines)
{
    for (Py_ssize_t x = 0; x < PyList_GET_SIZE(lines); x++)
        if (unclaimed(s, PyList_GET_ITEM(lines, x)) < 0)
            return -1;
    return 0;
}

/* ConnectClaims.hold: 1 held (overflow lines went on before), 0 not smtp(8)'s, -1 error */
static int claims_hold(Shard *s, const char *raw, Py_ssize_t n, Py_ssize_t i)
{
    Py_ssize_t ks, kn;
    if (!session_key(raw, i, &ks, &kn))
        return 0;
    PyObject *b = PyBytes_FromStringAndSize(raw, n);
    if (b == NULL)
        return -1;
    Py_ssize_t x = held_find(s, raw + ks, kn);
    if (x < 0) {
        if (s->nheld >= MAX_HELD_PROCESSES && held_release(s, 0) < 0) {
            Py_DECREF(b);
            return -1;
        }
        if (s->nheld == s->cheld) {
            Py_ssize_t nc = s->cheld ? s->cheld * 2 : 8;
            HeldProc *nh = PyMem_Realloc(s->held, nc * sizeof(HeldProc));
            if (nh == NULL) {
                Py_DECREF(b);
                PyErr_NoMemory();
                return -1;
            }
            s->held = nh;
            s->cheld = nc;
        }
        PyObject *key = PyBytes_FromStringAndSize(raw + ks, kn);
        PyObject *lines = key ? PyList_New(1) : NULL;
        if (lines == NULL) {
            Py_XDECREF(key);
            Py_DECREF(b);
            return -1;
        }
        PyList_SET_ITEM(lines, 0, b);
        s->held[s->nheld].key = key;
        s->held[s->nheld].lines = lines;
        s->nheld++;
        return 1;
    }
    PyObject *lines = s->held[x].lines;
    int rc = PyList_Append(lines, b);
    Py_DECREF(b);
    if (rc < 0)
        return -1;
    if (PyList_GET_SIZE(lines) > MAX_HELD_PER_PROCESS) {
        PyObject *old = PyList_GET_ITEM(lines, 0);
        Py_INCREF(old);
        if (PySequence_DelItem(lines, 0) < 0) {
            Py_DECREF(old);
            return -1;
        }
        rc = unclaimed(s, old);
        Py_DECREF(old);
        if (rc < 0)
            return -1;
    }
    return 1;
}

/* ConnectClaims.claim: the held lines of this line's process, given its queue id, go on
 * before it (the last one dropped when this line's text is that very failure) */
static int claims_claim(Shard *s, const char *raw, Py_ssize_t n, Py_ssize_t i)
{
    Py_ssize_t ks, kn;
    if (!session_key(raw, i, &ks, &kn))
        return 0;
    Py_ssize_t x = held_find(s, raw + ks, kn);
    if (x < 0)
        return 0;
    /* qid_of: raw.find(b": ", i + 3, i + 3 + _Q_MAX + 1), so at most Q_MAX - 1 bytes here */
    Py_ssize_t qn = queue_id_len(raw + i + 3, n - (i + 3) < Q_MAX + 1 ? n - (i + 3) : Q_MAX + 1);
    if (qn <= 0)
        return 0;
    Py_ssize_t j = i + 3 + qn;
    HeldProc hp = s->held[x];
    held_remove(s, x);
    Py_ssize_t nl = PyList_GET_SIZE(hp.lines);
    /* twin: this line's body ends with "(" + the last held line's body + ")" */
    PyObject *last = PyList_GET_ITEM(hp.lines, nl - 1);
    const char *lr = PyBytes_AS_STRING(last);
    Py_ssize_t ln = PyBytes_GET_SIZE(last);
    Py_ssize_t li = find3(lr, 0, ln, "]: ");
    Py_ssize_t lb = li + 3, le = body_end(lr, ln);
    Py_ssize_t cb = j + 2, ce = body_end(raw, n);
    Py_ssize_t tl = le > lb ? le - lb : 0;
    int twin = li >= 0 && ce - cb >= tl + 2 && raw[ce - 1] == ')' && raw[ce - 2 - tl] == '(' &&
               memcmp(raw + ce - 1 - tl, lr + lb, tl) == 0;
    int rc = 0;
    char *buf = NULL;
    Py_ssize_t cap = 0;
    /* the claimed lines have this line's queue id: they go where it goes */
    int mine = s->nshards == 1 || shard_of_line(s, raw, n, i) == s->me;
    for (Py_ssize_t y = 0; mine && y < nl - twin && rc == 0; y++) {
        PyObject *r = PyList_GET_ITEM(hp.lines, y);
        const char *rr = PyBytes_AS_STRING(r);
        Py_ssize_t rn = PyBytes_GET_SIZE(r);
        Py_ssize_t k = find3(rr, 0, rn, "]: ");
        Py_ssize_t need = rn + qn + 2;
        if (need > cap) {
            char *nb = PyMem_Realloc(buf, need);
            if (nb == NULL) {
                PyErr_NoMemory();
                rc = -1;
                break;
            }
            buf = nb;
            cap = need;
        }
        memcpy(buf, rr, k + 3);
        memcpy(buf + k + 3, raw + i + 3, qn);
        buf[k + 3 + qn] = ':';
        buf[k + 4 + qn] = ' ';
        memcpy(buf + k + 5 + qn, rr + k + 3, rn - k - 3);
        rc = line_body(s, buf, need);
    }
    PyMem_Free(buf);
    if (rc == 0 && twin && mine) {
        s->total++; /* read and understood: the status lines say it */
        s->ignored++;
    }
    Py_DECREF(hp.key);
    Py_DECREF(hp.lines);
    return rc;
}

/* one line; raw excludes nothing (it has its "\n" when the source had one) */
static int line(Shard *s, const char *raw, Py_ssize_t n)
{
    Py_ssize_t i = -2;
    if (s->nheld > 0 || n > 14) {
        i = find3(raw, 0, n, "]: ");
        if (i > 0) {
            if (n - (i + 3) >= 11 && memcmp(raw + i + 3, "connect to ", 11) == 0) {
                int r = claims_hold(s, raw, n, i);
                if (r != 0)
                    return r < 0 ? -1 : 0;
            }
            else if (s->nheld > 0 && claims_claim(s, raw, n, i) < 0)
                return -1;
        }
    }
    if (s->nshards > 1) {
        if (i == -2)
            i = find3(raw, 0, n, "]: ");
        if (shard_of_line(s, raw, n, i) != s->me)
            return 0;
    }
    return line_body(s, raw, n);
}

/* ------------------------------------------------------------------------------------- */
/* Python interface                                                                       */
/* ------------------------------------------------------------------------------------- */

static int Shard_init(Shard *s, PyObject *args, PyObject *kw)
{
    static char *kwlist[] = {"me",          "nshards",        "folder",
                             "store",       "since",          "until",
                             "batch_messages", "classify_row", "provider_for_host",
                             "provider_for_domain", "is_postfix", "user_name",
                             "kindagg",     "program",        "reply",
                             "resolve_users",
                             "horizon",     "max_open",       NULL};
    int me, nshards, store, resolve_users = 1;
    double since, until, horizon = 7 * 86400.0;
    Py_ssize_t batch_messages, max_open = 200000;
    PyObject *folder, *classify_row, *pfh, *pfd, *is_pf, *user_name, *kindagg, *program, *reply;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "iiOpddnOOOOOOOO|pdn", kwlist, &me, &nshards,
                                     &folder, &store, &since, &until, &batch_messages,
                                     &classify_row, &pfh, &pfd, &is_pf, &user_name, &kindagg,
                                     &program, &reply, &resolve_users, &horizon, &max_open))
        return -1;
    if (nshards < 1 || me < 0 || me >= nshards || max_open < 1 || batch_messages < 1) {
        PyErr_SetString(PyExc_ValueError, "bad shard, max_open or batch size");
        return -1;
    }
    if (s->folder != NULL) {
        PyErr_SetString(PyExc_RuntimeError, "Shard is initialised once");
        return -1;
    }
    s->me = me;
    s->nshards = nshards;
    s->store = store;
    s->resolve_users = resolve_users;
    s->since = since;
    s->until = until;
    s->horizon = horizon;
    s->max_open = max_open;
    s->batch_messages = batch_messages;
#define KEEP(f, v)                                                                              \
    do {                                                                                         \
        Py_INCREF(v);                                                                            \
        s->f = v;                                                                                \
    } while (0)
    KEEP(folder, folder);
    KEEP(classify_row, classify_row);
    KEEP(provider_for_host, pfh);
    KEEP(provider_for_domain, pfd);
    KEEP(is_postfix, is_pf);
    KEEP(user_name, user_name);
    KEEP(kindagg, kindagg);
    KEEP(program_cb, program);
    KEEP(reply_cb, reply);
    s->inbound_cb = PyObject_GetAttrString(folder, "inbound_parts");
    if (s->inbound_cb == NULL)
        return -1;
    s->mx_cb = PyObject_GetAttrString(folder, "mx_fold");
    if (s->mx_cb == NULL)
        return -1;
    s->relays = PyDict_New();
    s->prov_host = PyDict_New();
    s->prov_domain = PyDict_New();
    s->cls_cache = PyDict_New();
    s->reply_cache = PyDict_New();
    s->users = PyDict_New();
    s->uid_strs = PyDict_New();
    s->small = PyDict_New();
    s->prov_index = PyDict_New();
    s->internal = PyDict_New();
    s->orig_index = PyDict_New();
    PyObject *coll = PyImport_ImportModule("collections");
    s->bounce_map = coll ? PyObject_CallMethod(coll, "OrderedDict", NULL) : NULL;
    Py_XDECREF(coll);
    if (!s->relays || !s->prov_host || !s->prov_domain || !s->cls_cache || !s->reply_cache ||
        !s->users || !s->uid_strs ||
        !s->small || !s->prov_index || !s->internal || !s->orig_index || !s->bounce_map)
        return -1;
    if (table_init(&s->open) < 0)
        return -1;
    s->first_ts = INFINITY;
    s->last_ts = -INFINITY;
    s->now = 0.0;
    s->next_sweep = 0.0;
    return refresh_batch(s);
}

static PyObject *Shard_begin(Shard *s, PyObject *args, PyObject *kw)
{
    static char *kwlist[] = {"stamps", "min_cache", "trad", "iso", "sec", "iso_cache", "host",
                             "slow_line", "slow_msg", NULL};
    PyObject *stamps, *min_cache, *trad, *iso, *sec, *iso_cache, *host, *slow_line, *slow_msg;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "OO!OOO!O!OOO", kwlist, &stamps, &PyDict_Type,
                                     &min_cache, &trad, &iso, &PyDict_Type, &sec, &PyDict_Type,
                                     &iso_cache, &host, &slow_line, &slow_msg))
        return NULL;
    if (s->folder == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "Shard not initialised");
        return NULL;
    }
    shard_drop_source(s);
    KEEP(stamps, stamps);
    KEEP(min_cache, min_cache);
    KEEP(trad, trad);
    KEEP(iso, iso);
    KEEP(sec, sec);
    KEEP(iso_cache, iso_cache);
    KEEP(host_fn, host);
    KEEP(slow_line, slow_line);
    KEEP(slow_msg, slow_msg);
    s->latest = 0.0;
    s->total = s->parsed = s->ignored = s->foreign = s->ooo = 0;
    Py_RETURN_NONE;
}

static PyObject *Shard_feed(Shard *s, PyObject *arg)
{
    if (s->slow_line == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "feed() before begin()");
        return NULL;
    }
    Py_buffer view;
    if (PyObject_GetBuffer(arg, &view, PyBUF_SIMPLE) < 0)
        return NULL;
    const char *p = view.buf, *end = p + view.len;
    int rc = 0;
    while (p < end) {
        const char *nl = memchr(p, '\n', end - p);
        const char *stop = nl ? nl + 1 : end;
        if (line(s, p, stop - p) < 0) {
            rc = -1;
            break;
        }
        p = stop;
    }
    PyBuffer_Release(&view);
    if (rc < 0)
        return NULL;
    Py_RETURN_NONE;
}

/* the "connect to" lines still held at the end of a source, as they are (before end()) */
static PyObject *Shard_release(Shard *s, PyObject *Py_UNUSED(ignored))
{
    while (s->nheld > 0)
        if (held_release(s, 0) < 0)
            return NULL;
    Py_RETURN_NONE;
}

/* counters of the source since begin(): (total, parsed, ignored, foreign, out_of_order) */
static PyObject *Shard_end(Shard *s, PyObject *Py_UNUSED(ignored))
{
    PyObject *r = Py_BuildValue("(nnnnn)", s->total, s->parsed, s->ignored, s->foreign, s->ooo);
    shard_drop_source(s);
    s->total = s->parsed = s->ignored = s->foreign = s->ooo = 0;
    return r;
}

static PyObject *Shard_feed_event(Shard *s, PyObject *ev)
{
    if (s->folder == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "Shard not initialised");
        return NULL;
    }
    int rc = feed_event(s, ev);
    if (drain(s) < 0 || rc < 0)
        return NULL;
    Py_RETURN_NONE;
}

/* flush the correlator (every open message, in order) and return the aggregates:
 * (messages, recipients, attempts, first_ts, last_ts, outside,
 *  [(provider, recipients, delivered, deferred, bounced, expired, attempts, kinds)],
 *  internal, [((kind, ident), name, messages, recipients, delivered, deferred, bounced,
 *  providers)])
 */
static PyObject *Shard_finish(Shard *s, PyObject *Py_UNUSED(ignored))
{
    if (s->folder == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "Shard not initialised");
        return NULL;
    }
    while (s->open.head) {
        Msg *m = s->open.head;
        table_unlink(&s->open, m);
        if (emit(s, m) < 0)
            return NULL;
    }
    if (drain(s) < 0)
        return NULL;
    PyObject *provs = PyList_New(s->nprov);
    if (provs == NULL)
        return NULL;
    for (Py_ssize_t i = 0; i < s->nprov; i++) {
        ProvAgg *p = &s->provs[i];
        PyObject *t = Py_BuildValue("(OnnnnnnO)", p->name, p->recipients, p->delivered,
                                    p->deferred, p->bounced, p->expired, p->attempts, p->kinds);
        if (t == NULL) {
            Py_DECREF(provs);
            return NULL;
        }
        PyList_SET_ITEM(provs, i, t);
    }
    PyObject *origs = PyList_New(s->norig);
    if (origs == NULL) {
        Py_DECREF(provs);
        return NULL;
    }
    for (Py_ssize_t i = 0; i < s->norig; i++) {
        OrigAgg *o = &s->origs[i];
        PyObject *t = Py_BuildValue("(OOnnnnnO)", o->key, o->name, o->messages, o->recipients,
                                    o->delivered, o->deferred, o->bounced, o->providers);
        if (t == NULL) {
            Py_DECREF(provs);
            Py_DECREF(origs);
            return NULL;
        }
        PyList_SET_ITEM(origs, i, t);
    }
    return Py_BuildValue("(nnnddnNON)", s->messages, s->recipients, s->attempts, s->first_ts,
                         s->last_ts, s->outside, provs, s->internal, origs);
}

/* a provider touched by Python (a connection-level reply of no message): its place in the
 * order of providers, as in the reference */
static PyObject *Shard_touch_provider(Shard *s, PyObject *name)
{
    if (!PyUnicode_Check(name)) {
        PyErr_SetString(PyExc_TypeError, "provider name must be str");
        return NULL;
    }
    if (s->provs == NULL && s->prov_index == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "Shard not initialised");
        return NULL;
    }
    if (prov_agg(s, name) == NULL)
        return NULL;
    Py_RETURN_NONE;
}

static int Shard_traverse(Shard *s, visitproc visit, void *arg)
{
    Py_VISIT(s->folder);
    Py_VISIT(s->classify_row);
    Py_VISIT(s->provider_for_host);
    Py_VISIT(s->provider_for_domain);
    Py_VISIT(s->is_postfix);
    Py_VISIT(s->user_name);
    Py_VISIT(s->kindagg);
    Py_VISIT(s->program_cb);
    Py_VISIT(s->reply_cb);
    Py_VISIT(s->inbound_cb);
    Py_VISIT(s->mx_cb);
    Py_VISIT(s->stamps);
    Py_VISIT(s->trad);
    Py_VISIT(s->iso);
    Py_VISIT(s->host_fn);
    Py_VISIT(s->slow_line);
    Py_VISIT(s->slow_msg);
    Py_VISIT(s->batch);
    return 0;
}

static int Shard_clear(Shard *s)
{
    shard_drop_source(s);
    Py_CLEAR(s->folder);
    Py_CLEAR(s->classify_row);
    Py_CLEAR(s->provider_for_host);
    Py_CLEAR(s->provider_for_domain);
    Py_CLEAR(s->is_postfix);
    Py_CLEAR(s->user_name);
    Py_CLEAR(s->kindagg);
    Py_CLEAR(s->program_cb);
    Py_CLEAR(s->reply_cb);
    Py_CLEAR(s->inbound_cb);
    Py_CLEAR(s->mx_cb);
    Py_CLEAR(s->batch);
    Py_CLEAR(s->b_messages);
    Py_CLEAR(s->b_attempts);
    Py_CLEAR(s->b_kinds);
    Py_CLEAR(s->b_links);
    return 0;
}

static void Shard_dealloc(Shard *s)
{
    PyObject_GC_UnTrack(s);
    Shard_clear(s);
    if (s->open.buckets) {
        Msg *m = s->open.head;
        while (m) {
            Msg *nx = m->next;
            msg_free(m);
            m = nx;
        }
        PyMem_Free(s->open.buckets);
    }
    for (Py_ssize_t i = 0; i < s->npend; i++)
        msg_free(s->pending[i]);
    PyMem_Free(s->pending);
    for (Py_ssize_t i = 0; i < s->nheld; i++) {
        Py_XDECREF(s->held[i].key);
        Py_XDECREF(s->held[i].lines);
    }
    PyMem_Free(s->held);
    for (int i = 0; i < s->nprogs; i++) {
        Py_XDECREF(s->progs[i].bytes);
        Py_XDECREF(s->progs[i].str);
    }
    for (Py_ssize_t i = 0; i < s->nprov; i++) {
        Py_XDECREF(s->provs[i].name);
        Py_XDECREF(s->provs[i].kinds);
    }
    PyMem_Free(s->provs);
    for (Py_ssize_t i = 0; i < s->norig; i++) {
        Py_XDECREF(s->origs[i].key);
        Py_XDECREF(s->origs[i].name);
        Py_XDECREF(s->origs[i].providers);
    }
    PyMem_Free(s->origs);
    Py_XDECREF(s->relays);
    Py_XDECREF(s->prov_host);
    Py_XDECREF(s->prov_domain);
    Py_XDECREF(s->cls_cache);
    Py_XDECREF(s->reply_cache);
    Py_XDECREF(s->users);
    Py_XDECREF(s->uid_strs);
    Py_XDECREF(s->small);
    Py_XDECREF(s->prov_index);
    Py_XDECREF(s->internal);
    Py_XDECREF(s->orig_index);
    Py_XDECREF(s->bounce_map);
    Py_TYPE(s)->tp_free((PyObject *)s);
}

static PyMethodDef Shard_methods[] = {
    {"begin", (PyCFunction)(void (*)(void))Shard_begin, METH_VARARGS | METH_KEYWORDS,
     "begin(trad, iso, sec, iso_cache, host, slow_line, slow_msg): start a source (file)."},
    {"feed", (PyCFunction)Shard_feed, METH_O, "feed(buffer): whole lines of the source."},
    {"release", (PyCFunction)Shard_release, METH_NOARGS,
     "release(): the held \"connect to\" lines of the source, unclaimed (before end())."},
    {"end", (PyCFunction)Shard_end, METH_NOARGS,
     "end() -> (total, parsed, ignored, foreign, out_of_order) of the source."},
    {"feed_event", (PyCFunction)Shard_feed_event, METH_O,
     "feed_event(event): one Postfix event into the correlator."},
    {"finish", (PyCFunction)Shard_finish, METH_NOARGS,
     "finish() -> aggregates, after folding every open message."},
    {"touch_provider", (PyCFunction)Shard_touch_provider, METH_O,
     "touch_provider(name): the provider's place in the order of providers."},
    {NULL, NULL, 0, NULL},
};

static PyTypeObject ShardType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "mailwarden.sources._postfixscan.Shard",
    .tp_basicsize = sizeof(Shard),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "The analyze hot loop of one worker: parse, correlate, fold (see the module).",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Shard_init,
    .tp_dealloc = (destructor)Shard_dealloc,
    .tp_traverse = (traverseproc)Shard_traverse,
    .tp_clear = (inquiry)Shard_clear,
    .tp_methods = Shard_methods,
};

static PyObject *set_event_types(PyObject *Py_UNUSED(mod), PyObject *args)
{
    PyObject *t[10];
    if (!PyArg_ParseTuple(args, "OOOOOOOOOO", &t[0], &t[1], &t[2], &t[3], &t[4], &t[5], &t[6],
                          &t[7], &t[8], &t[9]))
        return NULL;
    PyObject **slots[] = {&T_Arrival,      &T_Delivery, &T_QueueActive, &T_MessageIdSeen,
                          &T_Removed,      &T_BounceNotice, &T_Expired, &T_Held,
                          &T_InboundReject, &T_MxReply};
    for (int i = 0; i < 10; i++) {
        if (!PyType_Check(t[i])) {
            PyErr_SetString(PyExc_TypeError, "event classes expected");
            return NULL;
        }
        Py_INCREF(t[i]);
        Py_XSETREF(*slots[i], t[i]);
    }
    Py_RETURN_NONE;
}

/* ------------------------------------------------------------------------------------- */
/* the store writer's per-row loops (store.ingest.Writer), same results                  */
/* ------------------------------------------------------------------------------------- */

/* Writer._write_messages' loop: rows in store.rows.MESSAGE_COLUMNS layout; origin_ids maps
 * (kind, ident) -> id for every row (resolved before); links, linked, dsn_candidates and
 * existing as in the Writer. Returns (ids, origin_of, known, new_rows, updates, next_id). */
static PyObject *db_messages(PyObject *Py_UNUSED(mod), PyObject *args)
{
    PyObject *rows, *origin_ids, *links, *linked, *dsn, *existing;
    long long next_id;
    if (!PyArg_ParseTuple(args, "O!LO!O!O!O!O!", &PyList_Type, &rows, &next_id, &PyDict_Type,
                          &origin_ids, &PyDict_Type, &links, &PySet_Type, &linked, &PyDict_Type,
                          &dsn, &PyDict_Type, &existing))
        return NULL;
    Py_ssize_t n = PyList_GET_SIZE(rows);
    PyObject *ids = PyList_New(0), *origin_of = PyList_New(0), *known = PySet_New(NULL);
    PyObject *new_rows = PyList_New(0), *updates = PyList_New(0);
    PyObject *k_mid = PyUnicode_InternFromString("mid"), *k_exp = PyUnicode_InternFromString("exp");
    PyObject *k_rem = PyUnicode_InternFromString("rem"), *k_bo = PyUnicode_InternFromString("bo");
    int err = !ids || !origin_of || !known || !new_rows || !updates || !k_mid || !k_exp ||
              !k_rem || !k_bo;
    for (Py_ssize_t i = 0; i < n && !err; i++) {
        PyObject *r = PyList_GET_ITEM(rows, i);
        if (!PyTuple_Check(r) || PyTuple_GET_SIZE(r) != 13) {
            PyErr_SetString(PyExc_TypeError, "message rows must be 13-tuples");
            err = 1;
            break;
        }
        PyObject *host = PyTuple_GET_ITEM(r, 0), *qid = PyTuple_GET_ITEM(r, 1);
        PyObject *arrival = PyTuple_GET_ITEM(r, 2);
        PyObject *okey = PyTuple_Pack(2, PyTuple_GET_ITEM(r, 3), PyTuple_GET_ITEM(r, 4));
        PyObject *oid = okey ? PyDict_GetItemWithError(origin_ids, okey) : NULL;
        Py_XDECREF(okey);
        if (oid == NULL) {
            if (!PyErr_Occurred())
                PyErr_SetString(PyExc_KeyError, "origin not resolved");
            err = 1;
            break;
        }
        if (PyList_Append(origin_of, oid) < 0) {
            err = 1;
            break;
        }
        PyObject *key = PyTuple_Pack(2, host, qid);
        if (key == NULL) {
            err = 1;
            break;
        }
        PyObject *bounce_of = PyTuple_GET_ITEM(r, 10);
        Py_INCREF(bounce_of);
        int has_bo = PyObject_IsTrue(bounce_of);
        if (has_bo < 0)
            err = 1;
        else if (has_bo) {
            /* if links.pop((host, qid), None) is None: linked.add((host, qid)) */
            PyObject *had = PyDict_GET_SIZE(links) ? PyDict_GetItemWithError(links, key) : NULL;
            if (had != NULL)
                err = PyDict_DelItem(links, key) < 0;
            else if (PyErr_Occurred())
                err = 1;
            else
                err = PySet_Add(linked, key) < 0;
        }
        else if (PyDict_GET_SIZE(links)) {
            /* bounce_of = links.pop((host, qid), "") */
            PyObject *had = PyDict_GetItemWithError(links, key);
            if (had != NULL) {
                Py_INCREF(had);
                Py_SETREF(bounce_of, had);
                err = PyDict_DelItem(links, key) < 0;
            }
            else if (PyErr_Occurred())
                err = 1;
        }
        PyObject *mid = NULL;
        if (!err && PyDict_GET_SIZE(existing)) {
            PyObject *nk = PyTuple_Pack(3, arrival, host, qid);
            mid = nk ? PyDict_GetItemWithError(existing, nk) : NULL;
            Py_XDECREF(nk);
            if (nk == NULL || (mid == NULL && PyErr_Occurred()))
                err = 1;
        }
        if (!err && mid != NULL) {
            PyObject *u = PyDict_New();
            if (u == NULL || PyList_Append(ids, mid) < 0 || PySet_Add(known, mid) < 0 ||
                PyDict_SetItem(u, k_mid, mid) < 0 ||
                PyDict_SetItem(u, k_exp, PyTuple_GET_ITEM(r, 11)) < 0 ||
                PyDict_SetItem(u, k_rem, PyTuple_GET_ITEM(r, 12)) < 0 ||
                PyDict_SetItem(u, k_bo, bounce_of) < 0 || PyList_Append(updates, u) < 0)
                err = 1;
            Py_XDECREF(u);
        }
        else if (!err) {
            PyObject *m = PyLong_FromLongLong(next_id++);
            if (m == NULL || PyList_Append(ids, m) < 0)
                err = 1;
            if (!err) {
                int bo = PyObject_IsTrue(bounce_of), snd = PyObject_IsTrue(PyTuple_GET_ITEM(r, 6));
                if (bo < 0 || snd < 0)
                    err = 1;
                else if (!bo && !snd && PyDict_SetItem(dsn, key, m) < 0)
                    err = 1;
            }
            if (!err) {
                PyObject *nr = PyTuple_Pack(12, m, host, qid, arrival, oid, PyTuple_GET_ITEM(r, 6),
                                            PyTuple_GET_ITEM(r, 7), PyTuple_GET_ITEM(r, 8),
                                            PyTuple_GET_ITEM(r, 9), bounce_of,
                                            PyTuple_GET_ITEM(r, 11), PyTuple_GET_ITEM(r, 12));
                if (nr == NULL || PyList_Append(new_rows, nr) < 0)
                    err = 1;
                Py_XDECREF(nr);
            }
            Py_XDECREF(m);
        }
        Py_DECREF(bounce_of);
        Py_DECREF(key);
    }
    Py_XDECREF(k_mid);
    Py_XDECREF(k_exp);
    Py_XDECREF(k_rem);
    Py_XDECREF(k_bo);
    if (err) {
        Py_XDECREF(ids);
        Py_XDECREF(origin_of);
        Py_XDECREF(known);
        Py_XDECREF(new_rows);
        Py_XDECREF(updates);
        return NULL;
    }
    return Py_BuildValue("(NNNNNL)", ids, origin_of, known, new_rows, updates, next_id);
}

/* float // 86400 as Python computes it (float_floor_div) */
static double py_floordiv(double vx, double wx)
{
    double mod = fmod(vx, wx);
    double div = (vx - mod) / wx;
    if (mod) {
        if ((wx < 0) != (mod < 0)) {
            mod += wx;
            div -= 1.0;
        }
    }
    double floordiv;
    if (div) {
        floordiv = floor(div);
        if (div - floordiv > 0.5)
            floordiv += 1.0;
    }
    else
        floordiv = copysign(0.0, vx / wx);
    return floordiv;
}

/* Writer._write_attempts' loop: attempts in store.rows.ATTEMPT_COLUMNS layout. Updates
 * rollups and kind_new in place; returns (rows for the attempts table, duplicates, expired). */
static PyObject *db_attempts(PyObject *Py_UNUSED(mod), PyObject *args)
{
    PyObject *atts, *msg_ids, *host_of, *msg_origin, *kind_ids, *rollups, *kind_new, *seen;
    double cutoff;
    if (!PyArg_ParseTuple(args, "O!O!O!O!O!O!O!dO", &PyList_Type, &atts, &PyList_Type, &msg_ids,
                          &PyList_Type, &host_of, &PyList_Type, &msg_origin, &PyDict_Type,
                          &kind_ids, &PyDict_Type, &rollups, &PyDict_Type, &kind_new, &cutoff,
                          &seen))
        return NULL;
    int check_seen = PyObject_IsTrue(seen);
    if (check_seen < 0)
        return NULL;
    if (check_seen && !PyAnySet_Check(seen)) {
        PyErr_SetString(PyExc_TypeError, "seen must be a set");
        return NULL;
    }
    Py_ssize_t n = PyList_GET_SIZE(atts), nm = PyList_GET_SIZE(msg_ids);
    PyObject *out = PyList_New(0);
    if (out == NULL)
        return NULL;
    Py_ssize_t dups = 0, expired = 0;
    int err = 0;
    for (Py_ssize_t j = 0; j < n && !err; j++) {
        PyObject *r = PyList_GET_ITEM(atts, j);
        if (!PyTuple_Check(r) || PyTuple_GET_SIZE(r) != 17) {
            PyErr_SetString(PyExc_TypeError, "attempt rows must be 17-tuples");
            err = 1;
            break;
        }
        Py_ssize_t i = PyLong_AsSsize_t(PyTuple_GET_ITEM(r, 0));
        if (i == -1 && PyErr_Occurred()) {
            err = 1;
            break;
        }
        if (i < 0 || i >= nm || i >= PyList_GET_SIZE(host_of) || i >= PyList_GET_SIZE(msg_origin)) {
            PyErr_SetString(PyExc_IndexError, "attempt of an unknown message");
            err = 1;
            break;
        }
        PyObject *mid = PyList_GET_ITEM(msg_ids, i);
        PyObject *tso = PyTuple_GET_ITEM(r, 1);
        double ts = PyFloat_AsDouble(tso);
        if (ts == -1.0 && PyErr_Occurred()) {
            err = 1;
            break;
        }
        if (check_seen) {
            PyObject *k = PyTuple_Pack(3, mid, PyTuple_GET_ITEM(r, 2), tso);
            int in = k ? PySet_Contains(seen, k) : -1;
            Py_XDECREF(k);
            if (in < 0) {
                err = 1;
                break;
            }
            if (in) {
                dups++;
                continue;
            }
        }
        PyObject *prov = PyTuple_GET_ITEM(r, 7), *kind = PyTuple_GET_ITEM(r, 15);
        PyObject *kid = Py_None;
        int has_kind = PyObject_IsTrue(kind);
        if (has_kind < 0) {
            err = 1;
            break;
        }
        if (has_kind) {
            PyObject *kk = PyTuple_Pack(2, prov, kind);
            kid = kk ? PyDict_GetItemWithError(kind_ids, kk) : NULL;
            if (kid == NULL && kk != NULL && !PyErr_Occurred())
                PyErr_SetObject(PyExc_KeyError, kk);
            Py_XDECREF(kk);
            if (kid == NULL) {
                err = 1;
                break;
            }
        }
        PyObject *day = PyLong_FromDouble(py_floordiv(ts, 86400.0));
        PyObject *rk = day ? PyTuple_Pack(6, day, PyList_GET_ITEM(host_of, i), prov,
                                          PyList_GET_ITEM(msg_origin, i), PyTuple_GET_ITEM(r, 11),
                                          PyTuple_GET_ITEM(r, 16))
                           : NULL;
        Py_XDECREF(day);
        if (rk == NULL || counter_add(rollups, rk, 1) < 0) {
            Py_XDECREF(rk);
            err = 1;
            break;
        }
        Py_DECREF(rk);
        if (kid != Py_None) {
            PyObject *c = PyDict_GetItemWithError(kind_new, kid);
            if (c == NULL) {
                if (PyErr_Occurred()) {
                    err = 1;
                    break;
                }
                PyObject *one = PyLong_FromLong(1);
                PyObject *lst = one ? PyList_New(3) : NULL;
                if (lst == NULL) {
                    Py_XDECREF(one);
                    err = 1;
                    break;
                }
                PyList_SET_ITEM(lst, 0, one);
                Py_INCREF(tso);
                PyList_SET_ITEM(lst, 1, tso);
                Py_INCREF(tso);
                PyList_SET_ITEM(lst, 2, tso);
                err = PyDict_SetItem(kind_new, kid, lst) < 0;
                Py_DECREF(lst);
            }
            else if (!PyList_Check(c) || PyList_GET_SIZE(c) != 3) {
                PyErr_SetString(PyExc_TypeError, "kind_new values must be [count, first, last]");
                err = 1;
            }
            else {
                Py_ssize_t cnt = PyLong_AsSsize_t(PyList_GET_ITEM(c, 0));
                PyObject *nc = cnt == -1 && PyErr_Occurred() ? NULL : PyLong_FromSsize_t(cnt + 1);
                if (nc == NULL)
                    err = 1;
                else
                    PyList_SetItem(c, 0, nc);
                double first = PyFloat_AsDouble(PyList_GET_ITEM(c, 1));
                double last = PyFloat_AsDouble(PyList_GET_ITEM(c, 2));
                if (PyErr_Occurred())
                    err = 1;
                if (!err && ts < first) {
                    Py_INCREF(tso);
                    PyList_SetItem(c, 1, tso);
                }
                if (!err && ts > last) {
                    Py_INCREF(tso);
                    PyList_SetItem(c, 2, tso);
                }
            }
            if (err)
                break;
        }
        if (ts < cutoff) {
            expired++;
            continue;
        }
        PyObject *row = PyTuple_New(16);
        if (row == NULL) {
            err = 1;
            break;
        }
        Py_INCREF(mid);
        PyTuple_SET_ITEM(row, 0, mid);
        for (int k = 1; k < 15; k++) {
            PyObject *v = PyTuple_GET_ITEM(r, k);
            Py_INCREF(v);
            PyTuple_SET_ITEM(row, k, v);
        }
        Py_INCREF(kid);
        PyTuple_SET_ITEM(row, 15, kid);
        err = PyList_Append(out, row) < 0;
        Py_DECREF(row);
    }
    if (err) {
        Py_DECREF(out);
        return NULL;
    }
    return Py_BuildValue("(Nnn)", out, dups, expired);
}

static PyObject *py_mask_addresses(PyObject *Py_UNUSED(mod), PyObject *text)
{
    if (!PyUnicode_Check(text)) {
        PyErr_SetString(PyExc_TypeError, "str expected");
        return NULL;
    }
    if (!PyUnicode_IS_ASCII(text)) {
        Py_INCREF(text);
        return text;
    }
    return mask_addresses((const char *)PyUnicode_1BYTE_DATA(text), PyUnicode_GET_LENGTH(text));
}

static PyObject *py_reply_fields(PyObject *Py_UNUSED(mod), PyObject *text)
{
    if (!PyUnicode_Check(text)) {
        PyErr_SetString(PyExc_TypeError, "str expected");
        return NULL;
    }
    ReplyFields f;
    if (!PyUnicode_IS_ASCII(text))
        Py_RETURN_NONE;
    const char *t = (const char *)PyUnicode_1BYTE_DATA(text);
    if (!reply_fast(t, PyUnicode_GET_LENGTH(text), &f))
        Py_RETURN_NONE;
    return Py_BuildValue("(is#s#s#s#)", f.code, t + f.e0, f.e1 - f.e0, t + f.h0, f.h1 - f.h0,
                         t + f.i0, f.i1 - f.i0, t + f.c0, f.c1 - f.c0);
}

static PyMethodDef module_methods[] = {
    {"reply_fields", py_reply_fields, METH_O,
     "reply_fields(text) -> (code, enhanced, host, ip, command) when the C reading applies, "
     "else None"},
    {"db_messages", db_messages, METH_VARARGS,
     "db_messages(rows, next_id, origin_ids, links, linked, dsn_candidates, existing) -> "
     "(ids, origin_of, known, new_rows, updates, next_id): Writer._write_messages' loop"},
    {"db_attempts", db_attempts, METH_VARARGS,
     "db_attempts(attempts, msg_ids, host_of, msg_origin, kind_ids, rollups, kind_new, cutoff, "
     "seen) -> (rows, duplicates, expired): Writer._write_attempts' loop"},
    {"mask_addresses", py_mask_addresses, METH_O,
     "mask_addresses(text) -> text with its mail addresses as <addr> (ASCII text; other text "
     "is returned as it is)"},
    {"set_event_types", set_event_types, METH_VARARGS,
     "set_event_types(Arrival, Delivery, QueueActive, MessageIdSeen, Removed, BounceNotice, "
     "Expired, Held, InboundReject, MxReply)"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef moduledef = {
    PyModuleDef_HEAD_INIT, "_postfixscan",
    "C accelerator of the analyze hot loop (parse, correlate, fold).", -1, module_methods,
};

PyMODINIT_FUNC PyInit__postfixscan(void)
{
    struct {
        PyObject **p;
        const char *v;
    } consts[] = {
        {&S_empty, ""},           {&S_sasl, "sasl"},
        {&S_client, "client"},    {&S_uid, "uid"},
        {&S_bounce, "bounce"},    {&S_unknown, "unknown"},
        {&S_daemon, "MAILER-DAEMON"}, {&S_sent, "sent"},
        {&S_deferred, "deferred"}, {&S_bounced, "bounced"},
        {&S_expired, "expired"},  {&S_local, "local"},
        {&S_none, "none"},        {&S_reject, "reject"},
        {&S_rcpt, "RCPT"},
    };
    for (size_t i = 0; i < sizeof(consts) / sizeof(consts[0]); i++) {
        *consts[i].p = PyUnicode_InternFromString(consts[i].v);
        if (*consts[i].p == NULL)
            return NULL;
    }
    if (PyType_Ready(&ShardType) < 0)
        return NULL;
    PyObject *m = PyModule_Create(&moduledef);
    if (m == NULL)
        return NULL;
    Py_INCREF(&ShardType);
    if (PyModule_AddObject(m, "Shard", (PyObject *)&ShardType) < 0) {
        Py_DECREF(&ShardType);
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
