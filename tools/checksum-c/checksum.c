/*
 * checksum: a Caxton tool server written in C, to show that tool servers are language-agnostic.
 *
 * It speaks MCP (JSON-RPC 2.0, one JSON message per line) on stdin/stdout, like the Rust tool
 * servers built on mcp-guest: it answers `initialize`, `ping`, `tools/list` and `tools/call`,
 * ignores notifications (messages without an "id"), reports unknown methods (-32601), unparsable
 * lines (-32700) and invalid requests (-32600, -32602) as JSON-RPC errors, and reports a tool's
 * own failures (bad arguments, bad base64) as tool results with "isError": true.
 *
 * Tools:
 *   checksum {text}        -> "sha256=<64 hex> crc32=<8 hex> fnv1a64=<16 hex> bytes=<n>"
 *   base64   {text, mode}  -> mode "encode": standard base64 (with padding) of text's UTF-8 bytes;
 *                             mode "decode": the decoded bytes, which must be UTF-8 text.
 *
 * Only the C standard library and read(2) are used: it builds for wasm32-wasi with wasi-libc and
 * natively with any C11 compiler. All buffers are static and bounded: a line longer than
 * MAX_LINE bytes is answered with an error and skipped, never stored whole.
 */
#define _POSIX_C_SOURCE 200809L

#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#define SERVER_NAME "checksum"
#define SERVER_VERSION "0.1.0"
#define PROTOCOL_VERSION "2025-06-18"

/* The longest line accepted, in bytes, not counting its newline. */
#define MAX_LINE (1u << 20)
/* How deeply arrays and objects may nest in a message (serde_json's default limit too). */
#define MAX_DEPTH 128
/* Room for a tool's output: base64 of the longest possible text is the largest. */
#define RESULT_CAP (4u * ((MAX_LINE + 2u) / 3u) + 64u)

/* ------------------------------------------------------------------------------------------ */
/* Input: lines from stdin, bounded.                                                          */
/* ------------------------------------------------------------------------------------------ */

static unsigned char line_buf[MAX_LINE];
static unsigned char chunk[64 * 1024];
static size_t chunk_pos, chunk_len;
static int input_done;

/*
 * Reads the next line into line_buf, without its '\n'. Returns 0 at the end of input when no
 * line is left, else 1 with *len the bytes stored and *total the line's length, saturated at
 * MAX_LINE + 1: when *total > MAX_LINE the line was too long and the rest of it was discarded.
 * Uses read(2), not fread(3): fread would wait to fill its whole buffer, and a client that sends
 * one request and waits for the answer would wait forever.
 */
static int read_line(size_t *len, size_t *total) {
    size_t n = 0, t = 0;
    for (;;) {
        if (chunk_pos == chunk_len) {
            if (input_done) {
                *len = n;
                *total = t;
                return t > 0;
            }
            ssize_t r = read(0, chunk, sizeof chunk);
            if (r < 0 && errno == EINTR) continue;
            if (r <= 0) {
                input_done = 1;
                continue;
            }
            chunk_pos = 0;
            chunk_len = (size_t)r;
        }
        unsigned char *start = chunk + chunk_pos;
        size_t avail = chunk_len - chunk_pos;
        unsigned char *nl = memchr(start, '\n', avail);
        size_t seg = nl ? (size_t)(nl - start) : avail;
        if (n < MAX_LINE) {
            size_t room = MAX_LINE - n;
            size_t take = seg < room ? seg : room;
            memcpy(line_buf + n, start, take);
            n += take;
        }
        t = (seg > MAX_LINE || t + seg > MAX_LINE) ? MAX_LINE + 1 : t + seg;
        chunk_pos += seg;
        if (nl) {
            chunk_pos++;
            *len = n;
            *total = t;
            return 1;
        }
    }
}

/* ------------------------------------------------------------------------------------------ */
/* UTF-8                                                                                      */
/* ------------------------------------------------------------------------------------------ */

/* The length (1-4) of the well-formed UTF-8 sequence at p, or 0 if there is none. Rejects
   overlong forms, surrogates and code points above U+10FFFF. */
static size_t utf8_len(const unsigned char *p, const unsigned char *end) {
    size_t avail = (size_t)(end - p);
    unsigned c = p[0];
    if (c < 0x80) return 1;
    if (c < 0xC2) return 0;
    if (c < 0xE0) return (avail >= 2 && (p[1] & 0xC0) == 0x80) ? 2 : 0;
    if (c < 0xF0) {
        if (avail < 3 || (p[1] & 0xC0) != 0x80 || (p[2] & 0xC0) != 0x80) return 0;
        if (c == 0xE0 && p[1] < 0xA0) return 0; /* overlong */
        if (c == 0xED && p[1] >= 0xA0) return 0; /* UTF-16 surrogate */
        return 3;
    }
    if (c < 0xF5) {
        if (avail < 4 || (p[1] & 0xC0) != 0x80 || (p[2] & 0xC0) != 0x80 || (p[3] & 0xC0) != 0x80)
            return 0;
        if (c == 0xF0 && p[1] < 0x90) return 0; /* overlong */
        if (c == 0xF4 && p[1] >= 0x90) return 0; /* above U+10FFFF */
        return 4;
    }
    return 0;
}

/* Encodes a code point (not a surrogate, at most U+10FFFF) as UTF-8; returns its length. */
static size_t utf8_encode(uint32_t cp, unsigned char *out) {
    if (cp < 0x80) {
        out[0] = (unsigned char)cp;
        return 1;
    }
    if (cp < 0x800) {
        out[0] = (unsigned char)(0xC0 | (cp >> 6));
        out[1] = (unsigned char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        out[0] = (unsigned char)(0xE0 | (cp >> 12));
        out[1] = (unsigned char)(0x80 | ((cp >> 6) & 0x3F));
        out[2] = (unsigned char)(0x80 | (cp & 0x3F));
        return 3;
    }
    out[0] = (unsigned char)(0xF0 | (cp >> 18));
    out[1] = (unsigned char)(0x80 | ((cp >> 12) & 0x3F));
    out[2] = (unsigned char)(0x80 | ((cp >> 6) & 0x3F));
    out[3] = (unsigned char)(0x80 | (cp & 0x3F));
    return 4;
}

/* ------------------------------------------------------------------------------------------ */
/* JSON scanner                                                                               */
/*                                                                                            */
/* scan_value validates one value completely (strict RFC 8259: string escapes, surrogate      */
/* pairs, UTF-8, number grammar, nesting up to MAX_DEPTH) and records where it starts and     */
/* ends. A message is validated whole before anything is looked up in it, so the look-ups     */
/* (obj_get, json_string) can walk it without checking again.                                 */
/* ------------------------------------------------------------------------------------------ */

enum jtype { J_NONE, J_STRING, J_NUMBER, J_OBJECT, J_ARRAY, J_TRUE, J_FALSE, J_NULL };

typedef struct {
    const unsigned char *start, *end; /* the value's raw text, [start, end) */
    enum jtype type;
} Val;

typedef struct {
    const unsigned char *p, *begin, *end;
    const char *error; /* why scanning failed; p is then where */
} Scan;

static int fail(Scan *sc, const unsigned char *at, const char *why) {
    sc->p = at;
    sc->error = why;
    return 0;
}

static void skip_ws(Scan *sc) {
    while (sc->p < sc->end && (*sc->p == ' ' || *sc->p == '\t' || *sc->p == '\n' || *sc->p == '\r'))
        sc->p++;
}

static int hex_digit(unsigned c) {
    if (c >= '0' && c <= '9') return (int)(c - '0');
    if (c >= 'a' && c <= 'f') return (int)(c - 'a' + 10);
    if (c >= 'A' && c <= 'F') return (int)(c - 'A' + 10);
    return -1;
}

/* The four hex digits at p as a number, or -1. */
static long hex4(const unsigned char *p, const unsigned char *end) {
    if (end - p < 4) return -1;
    long v = 0;
    for (int i = 0; i < 4; i++) {
        int d = hex_digit(p[i]);
        if (d < 0) return -1;
        v = (v << 4) | d;
    }
    return v;
}

static int scan_string(Scan *sc) {
    const unsigned char *p = sc->p + 1, *end = sc->end; /* past the opening quote */
    while (p < end) {
        unsigned c = *p;
        if (c == '"') {
            sc->p = p + 1;
            return 1;
        }
        if (c < 0x20) return fail(sc, p, "control character in string");
        if (c == '\\') {
            if (end - p < 2) break;
            switch (p[1]) {
            case '"': case '\\': case '/': case 'b': case 'f': case 'n': case 'r': case 't':
                p += 2;
                continue;
            case 'u': {
                long u = hex4(p + 2, end);
                if (u < 0) return fail(sc, p, "bad \\u escape");
                if (u >= 0xDC00 && u <= 0xDFFF) return fail(sc, p, "lone low surrogate in \\u escape");
                if (u >= 0xD800 && u <= 0xDBFF) {
                    long lo = (end - p >= 12 && p[6] == '\\' && p[7] == 'u') ? hex4(p + 8, end) : -1;
                    if (lo < 0xDC00 || lo > 0xDFFF)
                        return fail(sc, p, "lone high surrogate in \\u escape");
                    p += 12;
                } else {
                    p += 6;
                }
                continue;
            }
            default:
                return fail(sc, p, "bad escape in string");
            }
        }
        size_t n = utf8_len(p, end);
        if (n == 0) return fail(sc, p, "invalid UTF-8");
        p += n;
    }
    return fail(sc, end, "unterminated string");
}

static int is_digit(const unsigned char *p, const unsigned char *end) {
    return p < end && *p >= '0' && *p <= '9';
}

static int scan_number(Scan *sc) {
    const unsigned char *p = sc->p, *end = sc->end;
    if (p < end && *p == '-') p++;
    if (!is_digit(p, end)) return fail(sc, p, "bad number");
    if (*p == '0') {
        p++;
    } else {
        while (is_digit(p, end)) p++;
    }
    if (p < end && *p == '.') {
        p++;
        if (!is_digit(p, end)) return fail(sc, p, "bad number");
        while (is_digit(p, end)) p++;
    }
    if (p < end && (*p == 'e' || *p == 'E')) {
        p++;
        if (p < end && (*p == '+' || *p == '-')) p++;
        if (!is_digit(p, end)) return fail(sc, p, "bad number");
        while (is_digit(p, end)) p++;
    }
    sc->p = p;
    return 1;
}

static int scan_literal(Scan *sc, const char *word) {
    size_t n = strlen(word);
    if ((size_t)(sc->end - sc->p) < n || memcmp(sc->p, word, n) != 0)
        return fail(sc, sc->p, "unexpected character");
    sc->p += n;
    return 1;
}

/* Scans one value after optional whitespace; on success fills *out (if not NULL). */
static int scan_value(Scan *sc, int depth, Val *out) {
    skip_ws(sc);
    if (sc->p >= sc->end) return fail(sc, sc->p, "unexpected end of input");
    const unsigned char *start = sc->p;
    enum jtype type;
    int ok;
    switch (*sc->p) {
    case '{':
    case '[': {
        int is_object = *sc->p == '{';
        unsigned char close = is_object ? '}' : ']';
        type = is_object ? J_OBJECT : J_ARRAY;
        if (depth >= MAX_DEPTH) return fail(sc, sc->p, "nesting too deep");
        sc->p++;
        skip_ws(sc);
        if (sc->p < sc->end && *sc->p == close) {
            sc->p++;
            ok = 1;
            break;
        }
        for (;;) {
            if (is_object) {
                skip_ws(sc);
                if (sc->p >= sc->end || *sc->p != '"') return fail(sc, sc->p, "expected a key");
                if (!scan_string(sc)) return 0;
                skip_ws(sc);
                if (sc->p >= sc->end || *sc->p != ':') return fail(sc, sc->p, "expected ':'");
                sc->p++;
            }
            if (!scan_value(sc, depth + 1, NULL)) return 0;
            skip_ws(sc);
            if (sc->p < sc->end && *sc->p == ',') {
                sc->p++;
                continue;
            }
            if (sc->p < sc->end && *sc->p == close) {
                sc->p++;
                break;
            }
            return fail(sc, sc->p, is_object ? "expected ',' or '}'" : "expected ',' or ']'");
        }
        ok = 1;
        break;
    }
    case '"':
        type = J_STRING;
        ok = scan_string(sc);
        break;
    case 't':
        type = J_TRUE;
        ok = scan_literal(sc, "true");
        break;
    case 'f':
        type = J_FALSE;
        ok = scan_literal(sc, "false");
        break;
    case 'n':
        type = J_NULL;
        ok = scan_literal(sc, "null");
        break;
    default:
        type = J_NUMBER;
        ok = (*sc->p == '-' || (*sc->p >= '0' && *sc->p <= '9')) ? scan_number(sc)
                                                                   : fail(sc, sc->p, "unexpected character");
        break;
    }
    if (ok && out) {
        out->start = start;
        out->end = sc->p;
        out->type = type;
    }
    return ok;
}

/*
 * Decodes a (validated) JSON string value into out, at most cap bytes, never splitting a
 * character. Returns 1 if it all fit, 0 if it was cut short; *len is the bytes written.
 */
static int json_string(const Val *v, unsigned char *out, size_t cap, size_t *len) {
    const unsigned char *p = v->start + 1, *end = v->end - 1;
    size_t n = 0;
    while (p < end) {
        unsigned char tmp[4];
        const unsigned char *src = tmp;
        size_t k;
        if (*p == '\\') {
            unsigned char e = p[1];
            k = 1;
            switch (e) {
            case 'b': tmp[0] = '\b'; p += 2; break;
            case 'f': tmp[0] = '\f'; p += 2; break;
            case 'n': tmp[0] = '\n'; p += 2; break;
            case 'r': tmp[0] = '\r'; p += 2; break;
            case 't': tmp[0] = '\t'; p += 2; break;
            case 'u': {
                uint32_t cp = (uint32_t)hex4(p + 2, end);
                p += 6;
                if (cp >= 0xD800 && cp <= 0xDBFF) {
                    uint32_t lo = (uint32_t)hex4(p + 2, end);
                    p += 6;
                    cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
                }
                k = utf8_encode(cp, tmp);
                break;
            }
            default: tmp[0] = e; p += 2; break; /* \" \\ \/ */
            }
        } else {
            src = p;
            k = utf8_len(p, end);
            if (k == 0) k = 1; /* cannot happen after validation */
            p += k;
        }
        if (k > cap - n) {
            *len = n;
            return 0;
        }
        memcpy(out + n, src, k);
        n += k;
    }
    *len = n;
    return 1;
}

/* Whether a JSON string value decodes to exactly `s`. */
static int string_is(const Val *v, const char *s) {
    unsigned char buf[64];
    size_t n, want = strlen(s);
    if (v->type != J_STRING || want > sizeof buf) return 0;
    return json_string(v, buf, sizeof buf, &n) && n == want && memcmp(buf, s, n) == 0;
}

/* The member `key` of a (validated) object; the last one wins if a key repeats, as in most
   JSON libraries. Returns 0 if obj is not an object or has no such member. */
static int obj_get(const Val *obj, const char *key, Val *out) {
    if (obj->type != J_OBJECT) return 0;
    Scan sc = {obj->start + 1, obj->start, obj->end, NULL};
    int found = 0;
    skip_ws(&sc);
    if (*sc.p == '}') return 0;
    for (;;) {
        Val k, v;
        if (!scan_value(&sc, 0, &k)) return 0; /* the key */
        skip_ws(&sc);
        sc.p++; /* ':' */
        if (!scan_value(&sc, 0, &v)) return 0;
        if (string_is(&k, key)) {
            *out = v;
            found = 1;
        }
        skip_ws(&sc);
        if (*sc.p != ',') break;
        sc.p++;
    }
    return found;
}

/* ------------------------------------------------------------------------------------------ */
/* Output                                                                                     */
/* ------------------------------------------------------------------------------------------ */

static void out_raw(const void *s, size_t n) {
    fwrite(s, 1, n, stdout);
}

static void out_str(const char *s) {
    out_raw(s, strlen(s));
}

/*
 * Writes bytes as the inside of a JSON string: quotes, backslashes and control characters are
 * escaped, well-formed UTF-8 is copied, and any byte that is not part of well-formed UTF-8
 * becomes U+FFFD, so the output is always valid JSON in valid UTF-8.
 */
static void out_escaped(const unsigned char *s, size_t n) {
    static const char hex[] = "0123456789abcdef";
    const unsigned char *p = s, *end = s + n, *run = s;
    while (p < end) {
        unsigned c = *p;
        if (c >= 0x20 && c < 0x80 && c != '"' && c != '\\') {
            p++;
            continue;
        }
        if (c >= 0x80) {
            size_t k = utf8_len(p, end);
            /* U+0085, U+2028 and U+2029 are valid in JSON strings, but are line breaks to some
               readers (JavaScript, Python's splitlines): escape them so a reply stays one line. */
            int line_break = (k == 2 && c == 0xC2 && p[1] == 0x85) ||
                             (k == 3 && c == 0xE2 && p[1] == 0x80 && (p[2] == 0xA8 || p[2] == 0xA9));
            if (k && !line_break) {
                p += k;
                continue;
            }
            if (line_break) {
                out_raw(run, (size_t)(p - run));
                out_str(k == 2 ? "\\u0085" : p[2] == 0xA8 ? "\\u2028" : "\\u2029");
                p += k;
                run = p;
                continue;
            }
        }
        out_raw(run, (size_t)(p - run));
        switch (c) {
        case '"': out_str("\\\""); break;
        case '\\': out_str("\\\\"); break;
        case '\b': out_str("\\b"); break;
        case '\f': out_str("\\f"); break;
        case '\n': out_str("\\n"); break;
        case '\r': out_str("\\r"); break;
        case '\t': out_str("\\t"); break;
        default:
            if (c < 0x20) {
                char u[7] = {'\\', 'u', '0', '0', hex[c >> 4], hex[c & 15], 0};
                out_str(u);
            } else {
                out_str("\\ufffd");
            }
        }
        p++;
        run = p;
    }
    out_raw(run, (size_t)(p - run));
}

static void out_escaped_str(const char *s) {
    out_escaped((const unsigned char *)s, strlen(s));
}

/* Starts a response: {"jsonrpc":"2.0","id":<the request's id, byte for byte, or null> */
static void begin_reply(const Val *id) {
    out_str("{\"jsonrpc\":\"2.0\",\"id\":");
    if (id && id->type != J_NONE)
        out_raw(id->start, (size_t)(id->end - id->start));
    else
        out_str("null");
}

static void end_reply(void) {
    out_str("}\n");
    fflush(stdout);
}

/* An error response; `detail` (may be NULL) is appended to the message as it is. */
static void send_error(const Val *id, int code, const char *message, const unsigned char *detail,
                       size_t detail_len) {
    char head[48];
    begin_reply(id);
    snprintf(head, sizeof head, ",\"error\":{\"code\":%d,\"message\":\"", code);
    out_str(head);
    out_escaped_str(message);
    if (detail) out_escaped(detail, detail_len);
    out_str("\"}");
    end_reply();
}

static void send_result(const Val *id, const char *result_json) {
    begin_reply(id);
    out_str(",\"result\":");
    out_str(result_json);
    end_reply();
}

/* ------------------------------------------------------------------------------------------ */
/* SHA-256 (FIPS 180-4), CRC-32 (IEEE 802.3, as zlib), FNV-1a 64                              */
/* ------------------------------------------------------------------------------------------ */

static const uint32_t SHA256_K[64] = {
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
    0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
    0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
    0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
    0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
    0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
    0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2,
};

static uint32_t rotr(uint32_t x, unsigned n) {
    return (x >> n) | (x << (32 - n));
}

static void sha256_block(uint32_t h[8], const unsigned char *b) {
    uint32_t w[64];
    for (int i = 0; i < 16; i++)
        w[i] = (uint32_t)b[4 * i] << 24 | (uint32_t)b[4 * i + 1] << 16 | (uint32_t)b[4 * i + 2] << 8 |
               (uint32_t)b[4 * i + 3];
    for (int i = 16; i < 64; i++) {
        uint32_t s0 = rotr(w[i - 15], 7) ^ rotr(w[i - 15], 18) ^ (w[i - 15] >> 3);
        uint32_t s1 = rotr(w[i - 2], 17) ^ rotr(w[i - 2], 19) ^ (w[i - 2] >> 10);
        w[i] = w[i - 16] + s0 + w[i - 7] + s1;
    }
    uint32_t a = h[0], b_ = h[1], c = h[2], d = h[3], e = h[4], f = h[5], g = h[6], hh = h[7];
    for (int i = 0; i < 64; i++) {
        uint32_t t1 = hh + (rotr(e, 6) ^ rotr(e, 11) ^ rotr(e, 25)) + ((e & f) ^ (~e & g)) + SHA256_K[i] + w[i];
        uint32_t t2 = (rotr(a, 2) ^ rotr(a, 13) ^ rotr(a, 22)) + ((a & b_) ^ (a & c) ^ (b_ & c));
        hh = g;
        g = f;
        f = e;
        e = d + t1;
        d = c;
        c = b_;
        b_ = a;
        a = t1 + t2;
    }
    h[0] += a;
    h[1] += b_;
    h[2] += c;
    h[3] += d;
    h[4] += e;
    h[5] += f;
    h[6] += g;
    h[7] += hh;
}

static void sha256(const unsigned char *data, size_t n, unsigned char digest[32]) {
    uint32_t h[8] = {0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a,
                     0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19};
    size_t i = 0;
    for (; n - i >= 64; i += 64) sha256_block(h, data + i);
    unsigned char last[128] = {0};
    size_t rest = n - i;
    memcpy(last, data + i, rest);
    last[rest] = 0x80;
    size_t blocks = rest + 1 + 8 <= 64 ? 1 : 2;
    uint64_t bits = (uint64_t)n * 8;
    for (int k = 0; k < 8; k++) last[blocks * 64 - 1 - k] = (unsigned char)(bits >> (8 * k));
    for (size_t b = 0; b < blocks; b++) sha256_block(h, last + 64 * b);
    for (int k = 0; k < 8; k++) {
        digest[4 * k] = (unsigned char)(h[k] >> 24);
        digest[4 * k + 1] = (unsigned char)(h[k] >> 16);
        digest[4 * k + 2] = (unsigned char)(h[k] >> 8);
        digest[4 * k + 3] = (unsigned char)h[k];
    }
}

static uint32_t crc32_table[256];

static void crc32_init(void) {
    for (uint32_t i = 0; i < 256; i++) {
        uint32_t c = i;
        for (int k = 0; k < 8; k++) c = (c & 1) ? 0xEDB88320u ^ (c >> 1) : c >> 1;
        crc32_table[i] = c;
    }
}

static uint32_t crc32(const unsigned char *data, size_t n) {
    uint32_t c = 0xFFFFFFFFu;
    for (size_t i = 0; i < n; i++) c = crc32_table[(c ^ data[i]) & 0xFF] ^ (c >> 8);
    return c ^ 0xFFFFFFFFu;
}

static uint64_t fnv1a64(const unsigned char *data, size_t n) {
    uint64_t h = 0xcbf29ce484222325ull;
    for (size_t i = 0; i < n; i++) {
        h ^= data[i];
        h *= 0x100000001b3ull;
    }
    return h;
}

/* ------------------------------------------------------------------------------------------ */
/* Base64 (RFC 4648, standard alphabet)                                                       */
/* ------------------------------------------------------------------------------------------ */

static const char B64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

static size_t base64_encode(const unsigned char *in, size_t n, unsigned char *out) {
    size_t o = 0, i = 0;
    for (; n - i >= 3; i += 3) {
        uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8 | in[i + 2];
        out[o++] = (unsigned char)B64[v >> 18];
        out[o++] = (unsigned char)B64[(v >> 12) & 63];
        out[o++] = (unsigned char)B64[(v >> 6) & 63];
        out[o++] = (unsigned char)B64[v & 63];
    }
    if (n - i == 1) {
        uint32_t v = (uint32_t)in[i] << 16;
        out[o++] = (unsigned char)B64[v >> 18];
        out[o++] = (unsigned char)B64[(v >> 12) & 63];
        out[o++] = '=';
        out[o++] = '=';
    } else if (n - i == 2) {
        uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8;
        out[o++] = (unsigned char)B64[v >> 18];
        out[o++] = (unsigned char)B64[(v >> 12) & 63];
        out[o++] = (unsigned char)B64[(v >> 6) & 63];
        out[o++] = '=';
    }
    return o;
}

static int base64_value(unsigned c) {
    if (c >= 'A' && c <= 'Z') return (int)(c - 'A');
    if (c >= 'a' && c <= 'z') return (int)(c - 'a' + 26);
    if (c >= '0' && c <= '9') return (int)(c - '0' + 52);
    if (c == '+') return 62;
    if (c == '/') return 63;
    return -1;
}

/*
 * Decodes base64 into out (which has room for 3/4 of n bytes). ASCII whitespace is skipped
 * (wrapped base64 decodes); '=' padding is optional but, if present, must be right. Returns 1,
 * or 0 with a message in err.
 */
static int base64_decode(const unsigned char *in, size_t n, unsigned char *out, size_t *out_len,
                         char *err, size_t err_cap) {
    uint32_t acc = 0;
    unsigned bits = 0;
    size_t symbols = 0, pad = 0, o = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned c = in[i];
        if (c == ' ' || c == '\t' || c == '\r' || c == '\n') continue;
        if (c == '=') {
            pad++;
            continue;
        }
        int d = base64_value(c);
        if (d < 0) {
            if (c > 0x20 && c < 0x7F)
                snprintf(err, err_cap, "invalid base64: unexpected character '%c' at byte %zu", (char)c, i);
            else
                snprintf(err, err_cap, "invalid base64: unexpected byte 0x%02x at byte %zu", c, i);
            return 0;
        }
        if (pad) {
            snprintf(err, err_cap, "invalid base64: data after '=' padding at byte %zu", i);
            return 0;
        }
        acc = (acc << 6) | (uint32_t)d;
        bits += 6;
        symbols++;
        if (bits >= 8) {
            bits -= 8;
            out[o++] = (unsigned char)(acc >> bits);
        }
    }
    if (symbols % 4 == 1) {
        snprintf(err, err_cap, "invalid base64: truncated input (%zu symbols is one too many or three too few)",
                 symbols);
        return 0;
    }
    if (pad && (symbols % 4 == 0 || (symbols + pad) % 4 != 0)) {
        snprintf(err, err_cap, "invalid base64: wrong '=' padding");
        return 0;
    }
    *out_len = o;
    return 1;
}

/* ------------------------------------------------------------------------------------------ */
/* Tools                                                                                      */
/* ------------------------------------------------------------------------------------------ */

static const char TOOLS_LIST[] =
    "{\"tools\":["
    "{\"name\":\"checksum\","
    "\"description\":\"Checksums of a text's UTF-8 bytes: SHA-256, CRC-32 (IEEE, as zlib) and FNV-1a 64-bit, "
    "plus the byte count. Answers 'sha256=<64 hex> crc32=<8 hex> fnv1a64=<16 hex> bytes=<n>'.\","
    "\"inputSchema\":{\"type\":\"object\",\"properties\":{"
    "\"text\":{\"type\":\"string\",\"description\":\"The text to checksum.\"}},"
    "\"required\":[\"text\"]}},"
    "{\"name\":\"base64\","
    "\"description\":\"Base64 (RFC 4648, standard alphabet): encode a text's UTF-8 bytes (with '=' padding), "
    "or decode base64 (whitespace ignored, padding optional) to UTF-8 text.\","
    "\"inputSchema\":{\"type\":\"object\",\"properties\":{"
    "\"text\":{\"type\":\"string\",\"description\":\"The text to encode, or the base64 to decode.\"},"
    "\"mode\":{\"type\":\"string\",\"enum\":[\"encode\",\"decode\"],\"description\":\"encode or decode.\"}},"
    "\"required\":[\"text\",\"mode\"]}}"
    "]}";

static const char INITIALIZE_RESULT[] =
    "{\"protocolVersion\":\"" PROTOCOL_VERSION "\",\"capabilities\":{\"tools\":{}},"
    "\"serverInfo\":{\"name\":\"" SERVER_NAME "\",\"version\":\"" SERVER_VERSION "\"}}";

static unsigned char text_buf[MAX_LINE]; /* a decoded argument: never longer than the line */
static unsigned char result_buf[RESULT_CAP];

typedef struct {
    const unsigned char *text;
    size_t len;
    int is_error;
} ToolResult;

#if defined(__GNUC__) || defined(__clang__)
__attribute__((format(printf, 1, 2)))
#endif
static ToolResult tool_error(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf((char *)result_buf, RESULT_CAP, fmt, ap);
    va_end(ap);
    ToolResult r = {result_buf, n > 0 ? (size_t)n : 0, 1};
    return r;
}

/*
 * A required string argument, decoded into buf. Returns 1, or 0 with *err set to a tool error.
 * args may be NULL (no arguments given).
 */
static int string_arg(const Val *args, const char *name, unsigned char *buf, size_t cap, size_t *len,
                      ToolResult *err) {
    Val v;
    if (!args || !obj_get(args, name, &v)) {
        *err = tool_error("missing string argument `%s`", name);
        return 0;
    }
    if (v.type != J_STRING) {
        *err = tool_error("argument `%s` must be a string", name);
        return 0;
    }
    if (!json_string(&v, buf, cap, len)) {
        *err = tool_error("argument `%s` is too long", name);
        return 0;
    }
    return 1;
}

static ToolResult tool_checksum(const Val *args) {
    ToolResult r;
    size_t n;
    if (!string_arg(args, "text", text_buf, sizeof text_buf, &n, &r)) return r;
    unsigned char digest[32];
    char hex[65];
    sha256(text_buf, n, digest);
    for (int i = 0; i < 32; i++) snprintf(hex + 2 * i, 3, "%02x", digest[i]);
    int len = snprintf((char *)result_buf, RESULT_CAP, "sha256=%s crc32=%08" PRIx32 " fnv1a64=%016" PRIx64 " bytes=%zu",
                       hex, crc32(text_buf, n), fnv1a64(text_buf, n), n);
    r.text = result_buf;
    r.len = (size_t)len;
    r.is_error = 0;
    return r;
}

static ToolResult tool_base64(const Val *args) {
    ToolResult r;
    size_t n, mode_len;
    unsigned char mode[16];
    if (!string_arg(args, "text", text_buf, sizeof text_buf, &n, &r)) return r;
    Val m;
    if (!args || !obj_get(args, "mode", &m)) return tool_error("missing string argument `mode`");
    if (m.type != J_STRING) return tool_error("argument `mode` must be a string");
    if (!json_string(&m, mode, sizeof mode, &mode_len)) mode_len = 0; /* too long to be a mode */
    int encode = mode_len == 6 && memcmp(mode, "encode", 6) == 0;
    int decode = mode_len == 6 && memcmp(mode, "decode", 6) == 0;
    if (!encode && !decode) return tool_error("argument `mode` must be \"encode\" or \"decode\"");
    r.text = result_buf;
    r.is_error = 0;
    if (encode) {
        r.len = base64_encode(text_buf, n, result_buf);
        return r;
    }
    char err[160];
    if (!base64_decode(text_buf, n, result_buf, &r.len, err, sizeof err)) return tool_error("%s", err);
    for (size_t i = 0; i < r.len;) {
        size_t k = utf8_len(result_buf + i, result_buf + r.len);
        if (k == 0)
            return tool_error("the decoded bytes are not UTF-8 text (invalid byte at offset %zu); "
                              "this tool returns text only",
                              i);
        i += k;
    }
    return r;
}

static void handle_tools_call(const Val *id, const Val *root) {
    Val params, name, args;
    int has_params = obj_get(root, "params", &params);
    if (!has_params || params.type != J_OBJECT || !obj_get(&params, "name", &name) || name.type != J_STRING) {
        send_error(id, -32602, "invalid params: tools/call needs params.name, a string", NULL, 0);
        return;
    }
    int has_args = obj_get(&params, "arguments", &args);
    const Val *a = has_args ? &args : NULL;
    ToolResult r;
    if (has_args && args.type == J_NULL) a = NULL;
    if (a && a->type != J_OBJECT) {
        r = tool_error("`arguments` must be an object");
    } else if (string_is(&name, "checksum")) {
        r = tool_checksum(a);
    } else if (string_is(&name, "base64")) {
        r = tool_base64(a);
    } else {
        unsigned char shown[100];
        size_t k;
        int whole = json_string(&name, shown, 96, &k);
        /* Built by hand, not with %s: the name may hold a NUL (\u0000). */
        size_t m = 0;
        memcpy(result_buf + m, "unknown tool `", 14);
        m += 14;
        memcpy(result_buf + m, shown, k);
        m += k;
        if (!whole) {
            memcpy(result_buf + m, "...", 3);
            m += 3;
        }
        result_buf[m++] = '`';
        r.text = result_buf;
        r.len = m;
        r.is_error = 1;
    }
    begin_reply(id);
    out_str(",\"result\":{\"content\":[{\"type\":\"text\",\"text\":\"");
    out_escaped(r.text, r.len);
    out_str(r.is_error ? "\"}],\"isError\":true}" : "\"}],\"isError\":false}");
    end_reply();
}

/* ------------------------------------------------------------------------------------------ */
/* Dispatch                                                                                   */
/* ------------------------------------------------------------------------------------------ */

static void handle_line(const unsigned char *line, size_t len) {
    Scan sc = {line, line, line + len, NULL};
    skip_ws(&sc);
    if (sc.p == sc.end) return; /* a blank line */
    Val root;
    int ok = scan_value(&sc, 0, &root);
    if (ok) {
        skip_ws(&sc);
        if (sc.p != sc.end) ok = fail(&sc, sc.p, "unexpected data after the message");
    }
    if (!ok) {
        char msg[96];
        snprintf(msg, sizeof msg, "parse error at byte %zu: %s", (size_t)(sc.p - line), sc.error);
        send_error(NULL, -32700, msg, NULL, 0);
        return;
    }
    if (root.type != J_OBJECT) {
        send_error(NULL, -32600, "invalid request: a message must be a JSON object", NULL, 0);
        return;
    }
    Val id, method;
    if (!obj_get(&root, "id", &id)) return; /* a notification: never answered */
    if (id.type != J_STRING && id.type != J_NUMBER && id.type != J_NULL) {
        send_error(NULL, -32600, "invalid request: `id` must be a string, a number or null", NULL, 0);
        return;
    }
    if (!obj_get(&root, "method", &method) || method.type != J_STRING) {
        send_error(&id, -32600, "invalid request: `method` must be a string", NULL, 0);
        return;
    }
    if (string_is(&method, "initialize")) {
        send_result(&id, INITIALIZE_RESULT);
    } else if (string_is(&method, "ping")) {
        send_result(&id, "{}");
    } else if (string_is(&method, "tools/list")) {
        send_result(&id, TOOLS_LIST);
    } else if (string_is(&method, "tools/call")) {
        handle_tools_call(&id, &root);
    } else {
        unsigned char shown[100];
        size_t k;
        int whole = json_string(&method, shown, 96, &k);
        if (!whole) {
            memcpy(shown + k, "...", 3);
            k += 3;
        }
        send_error(&id, -32601, "method not found: ", shown, k);
    }
}

int main(void) {
    crc32_init();
    size_t len, total;
    while (read_line(&len, &total)) {
        if (total > MAX_LINE) {
            send_error(NULL, -32600, "invalid request: line longer than 1048576 bytes, skipped", NULL, 0);
        } else {
            handle_line(line_buf, len);
        }
        if (ferror(stdout)) return 1; /* the host went away */
    }
    return 0;
}
