#!/usr/bin/env bash
# Tests the checksum tool server over its stdin/stdout, with exact expected answers.
# Usage: ./test.sh COMMAND...   e.g. ./test.sh ./checksum-native, ./test.sh wasmtime run checksum.wasm
# Ends with the line "N passed, N failed" and exits non-zero if any test failed.
set -u
# check runs at the end of pipelines: keep it in this shell, so that its counts add up.
shopt -s lastpipe

if [ $# -eq 0 ]; then
    set -- ./checksum-native
fi
SERVER=("$@")
passed=0
failed=0

# compare NAME EXPECTED ACTUAL: counts and reports one test.
compare() {
    local name=$1 expected=$2 actual=$3
    if [ "$actual" == "$expected" ]; then
        passed=$((passed + 1))
        echo "ok - $name"
    else
        failed=$((failed + 1))
        echo "FAIL - $name"
        echo "  expected: ${expected:0:2000}"
        echo "  actual:   ${actual:0:2000}"
    fi
}

# check NAME EXPECTED: runs the server on this function's stdin and compares all of its output.
check() {
    compare "$1" "$2" "$("${SERVER[@]}" 2>&1)"
}

# call ID TOOL ARGUMENTS_JSON: a tools/call request line.
call() {
    printf '{"jsonrpc":"2.0","id":%s,"method":"tools/call","params":{"name":"%s","arguments":%s}}\n' "$1" "$2" "$3"
}

# ok ID TEXT / err ID TEXT: the answer to a tools/call (TEXT already JSON-escaped).
ok() { printf '{"jsonrpc":"2.0","id":%s,"result":{"content":[{"type":"text","text":"%s"}],"isError":false}}' "$1" "$2"; }
err() { printf '{"jsonrpc":"2.0","id":%s,"result":{"content":[{"type":"text","text":"%s"}],"isError":true}}' "$1" "$2"; }

PING2='{"jsonrpc":"2.0","id":2,"result":{}}'

# --- the MCP methods ---------------------------------------------------------------------------

echo '{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"t","version":"1"}}}' |
    check "initialize" '{"jsonrpc":"2.0","id":1,"result":{"protocolVersion":"2025-06-18","capabilities":{"tools":{}},"serverInfo":{"name":"checksum","version":"0.1.0"}}}'

printf '%s\n' '{"jsonrpc":"2.0","method":"notifications/initialized"}' '{"jsonrpc":"2.0","id":2,"method":"ping"}' |
    check "a notification gets no reply" "$PING2"

printf '%s\n' '{"jsonrpc":"2.0","method":"no/such/method","params":[1,{"a":[]}]}' '{"jsonrpc":"2.0","id":2,"method":"ping"}' |
    check "an unknown notification gets no reply either" "$PING2"

printf '%s\n' '{"jsonrpc":"2.0","id":"req-7 \"x\" \u00e9","method":"ping"}' |
    check "a string id is echoed exactly" '{"jsonrpc":"2.0","id":"req-7 \"x\" \u00e9","result":{}}'

printf '%s\n' '{"id":-1.50e+3,"jsonrpc":"2.0","method":"ping"}' |
    check "a number id is echoed exactly" '{"jsonrpc":"2.0","id":-1.50e+3,"result":{}}'

printf '%s\n' '{"jsonrpc":"2.0","id":3,"method":"tools/list"}' |
    check "tools/list" '{"jsonrpc":"2.0","id":3,"result":{"tools":[{"name":"checksum","description":"Checksums of a text'"'"'s UTF-8 bytes: SHA-256, CRC-32 (IEEE, as zlib) and FNV-1a 64-bit, plus the byte count. Answers '"'"'sha256=<64 hex> crc32=<8 hex> fnv1a64=<16 hex> bytes=<n>'"'"'.","inputSchema":{"type":"object","properties":{"text":{"type":"string","description":"The text to checksum."}},"required":["text"]}},{"name":"base64","description":"Base64 (RFC 4648, standard alphabet): encode a text'"'"'s UTF-8 bytes (with '"'"'='"'"' padding), or decode base64 (whitespace ignored, padding optional) to UTF-8 text.","inputSchema":{"type":"object","properties":{"text":{"type":"string","description":"The text to encode, or the base64 to decode."},"mode":{"type":"string","enum":["encode","decode"],"description":"encode or decode."}},"required":["text","mode"]}}]}}'

printf '%s\n' '{"jsonrpc":"2.0","id":4,"method":"resources/list"}' |
    check "an unknown method is -32601" '{"jsonrpc":"2.0","id":4,"error":{"code":-32601,"message":"method not found: resources/list"}}'

printf '%s\n' '{"jsonrpc":"2.0","id":5,"method":"tools/call"}' |
    check "tools/call without params is -32602" '{"jsonrpc":"2.0","id":5,"error":{"code":-32602,"message":"invalid params: tools/call needs params.name, a string"}}'

printf '%s\n' '{"jsonrpc":"2.0","id":6,"method":7}' |
    check "a method that is not a string is -32600" '{"jsonrpc":"2.0","id":6,"error":{"code":-32600,"message":"invalid request: `method` must be a string"}}'

printf '%s\n' '[1,2]' |
    check "a message that is not an object is -32600" '{"jsonrpc":"2.0","id":null,"error":{"code":-32600,"message":"invalid request: a message must be a JSON object"}}'

# --- checksum ----------------------------------------------------------------------------------

call 10 checksum '{"text":"abc"}' |
    check "checksum of abc" "$(ok 10 'sha256=ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad crc32=352441c2 fnv1a64=e71fa2190541574b bytes=3')"

call 11 checksum '{"text":""}' |
    check "checksum of the empty string" "$(ok 11 'sha256=e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855 crc32=00000000 fnv1a64=cbf29ce484222325 bytes=0')"

call 12 checksum '{"text":"123456789"}' |
    check "checksum of 123456789 (the CRC-32 check value)" "$(ok 12 'sha256=15e2b0d3c33891ebb0f1ef609ec419420c20e320ce94c65fbc8c3312448eb225 crc32=cbf43926 fnv1a64=06d5573923c6cdfc bytes=9')"

call 13 checksum '{"text":"abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq"}' |
    check "checksum of the two-block SHA-256 test vector" "$(ok 13 'sha256=248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1 crc32=171a3f5f fnv1a64=dd305304cdb45735 bytes=56')"

call 14 checksum '{"text":"héllo wörld ✓ 😀"}' |
    check "checksum of raw UTF-8 text" "$(ok 14 'sha256=23e0a0c5e66366c058e29407717008da83f9004340e71ff074bb24bd4b80eb2a crc32=ce8c7062 fnv1a64=853d0ea6b9eee202 bytes=22')"

call 15 checksum '{"text":"\u00e9\ud83d\ude00"}' |
    check "checksum of \\u escapes with a surrogate pair" "$(ok 15 'sha256=1184d1f608158eea09d297565575892231550c403aaa913008d867a97cfd5c76 crc32=7f805a06 fnv1a64=52da6ebdce68376c bytes=6')"

call 16 checksum '{"text":"a\"b\\c\/d\b\f\n\r\t"}' |
    check "checksum of every short escape" "$(ok 16 'sha256=8687799675d2e9eb52ed2032e293e9dfa54325c090cf7cf8799d168e6db1c62e crc32=1811a216 fnv1a64=ebf31c0552f38252 bytes=12')"

printf '{"jsonrpc":"2.0","params":{"arguments":{"other":[{"text":"no"}],"te\\u0078t":"abc"},"name":"checksum"},"method":"tools/call","id":17}\n' |
    check "keys are found in any order, escaped, past nested values" "$(ok 17 'sha256=ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad crc32=352441c2 fnv1a64=e71fa2190541574b bytes=3')"

{ printf '{"jsonrpc":"2.0","id":18,"method":"tools/call","params":{"name":"checksum","arguments":{"text":"'
  head -c 1000000 /dev/zero | tr '\0' a
  printf '"}}}\n'; } |
    check "checksum of a million a's (under the line limit)" "$(ok 18 'sha256=cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0 crc32=dc25bfbc fnv1a64=24c638d05c2865e5 bytes=1000000')"

{ printf '{"jsonrpc":"2.0","id":60,"method":"tools/call","params":{"name":"checksum","arguments":{"text":"'
  head -c 1048476 /dev/zero | tr '\0' a
  printf '"}}}\n'; } |
    check "a line of exactly 1 MiB is accepted" "$(ok 60 'sha256=260da4ff7fb86d71d6c027d28765d999d02ffab854e267f5b714bcaaaf5dcc31 crc32=b7c7a659 fnv1a64=c93685317039e651 bytes=1048476')"

{ printf '{"jsonrpc":"2.0","id":61,"method":"tools/call","params":{"name":"checksum","arguments":{"text":"'
  head -c 1048477 /dev/zero | tr '\0' a
  printf '"}}}\n{"jsonrpc":"2.0","id":2,"method":"ping"}\n'; } |
    check "a line of 1 MiB + 1 byte is refused" '{"jsonrpc":"2.0","id":null,"error":{"code":-32600,"message":"invalid request: line longer than 1048576 bytes, skipped"}}
'"$PING2"

call 19 checksum '{}' | check "checksum without text" "$(err 19 'missing string argument `text`')"
call 20 checksum '{"text":42}' | check "checksum with a number for text" "$(err 20 'argument `text` must be a string')"
call 21 checksum '[]' | check "arguments that are not an object" "$(err 21 '`arguments` must be an object')"
call 22 sha1 '{"text":"abc"}' | check "an unknown tool" "$(err 22 'unknown tool `sha1`')"

# --- base64 ------------------------------------------------------------------------------------

call 30 base64 '{"text":"héllo wörld ✓ 😀","mode":"encode"}' |
    check "base64 encode of UTF-8 text" "$(ok 30 'aMOpbGxvIHfDtnJsZCDinJMg8J+YgA==')"

call 31 base64 '{"text":"aMOpbGxvIHfDtnJsZCDinJMg8J+YgA==","mode":"decode"}' |
    check "base64 decode back to UTF-8 text" "$(ok 31 'héllo wörld ✓ 😀')"

call 32 base64 '{"mode":"encode","text":"a\"b\\\n\u0001"}' |
    check "base64 encode of escaped characters" "$(ok 32 'YSJiXAoB')"

call 33 base64 '{"mode":"decode","text":"YSJiXAoB"}' |
    check "base64 decode to characters that need escaping" "$(ok 33 'a\"b\\\n\u0001')"

printf '%s\n' "$(call 34 base64 '{"text":"","mode":"encode"}')" "$(call 35 base64 '{"text":"f","mode":"encode"}')" \
    "$(call 36 base64 '{"text":"fo","mode":"encode"}')" "$(call 37 base64 '{"text":"foo","mode":"encode"}')" |
    check "base64 encode pads (RFC 4648 vectors)" "$(ok 34 '')
$(ok 35 'Zg==')
$(ok 36 'Zm8=')
$(ok 37 'Zm9v')"

printf '%s\n' "$(call 38 base64 '{"text":"Zm9vYmFy","mode":"decode"}')" "$(call 39 base64 '{"text":"Zm9vYg","mode":"decode"}')" \
    "$(call 40 base64 '{"text":"Zm9v\nYmE=\r\n","mode":"decode"}')" |
    check "base64 decode: unpadded and wrapped input" "$(ok 38 'foobar')
$(ok 39 'foob')
$(ok 40 'fooba')"

call 47 base64 '{"text":"4oCowoVh","mode":"decode"}' |
    check "U+2028 and U+0085 in output are escaped, keeping the reply one line" "$(ok 47 '\u2028\u0085a')"

call 41 base64 '{"text":"Zm9v!","mode":"decode"}' |
    check "base64 decode of a bad character" "$(err 41 "invalid base64: unexpected character '!' at byte 4")"
call 42 base64 '{"text":"Zm9vY","mode":"decode"}' |
    check "base64 decode of truncated input" "$(err 42 'invalid base64: truncated input (5 symbols is one too many or three too few)')"
call 43 base64 '{"text":"Zg=a","mode":"decode"}' |
    check "base64 decode of data after padding" "$(err 43 "invalid base64: data after '=' padding at byte 3")"
call 44 base64 '{"text":"/w==","mode":"decode"}' |
    check "base64 decode to bytes that are not UTF-8" "$(err 44 'the decoded bytes are not UTF-8 text (invalid byte at offset 0); this tool returns text only')"
call 45 base64 '{"text":"abc"}' | check "base64 without mode" "$(err 45 'missing string argument `mode`')"
call 46 base64 '{"text":"abc","mode":"rot13"}' | check "base64 with a bad mode" "$(err 46 'argument `mode` must be \"encode\" or \"decode\"')"

# --- bad input: answered, never fatal ------------------------------------------------------------

printf '%s\n' '{"jsonrpc":"2.0","id":1,"method":"ping"' '{"jsonrpc":"2.0","id":2,"method":"ping"}' |
    check "a malformed line is -32700 and the server goes on" '{"jsonrpc":"2.0","id":null,"error":{"code":-32700,"message":"parse error at byte 39: expected '"','"' or '"'}'"'"}}
'"$PING2"

printf '%s\n' 'not json at all' '{"jsonrpc":"2.0","id":2,"method":"ping"} trailing' |
    check "garbage and trailing data are -32700" '{"jsonrpc":"2.0","id":null,"error":{"code":-32700,"message":"parse error at byte 0: unexpected character"}}
{"jsonrpc":"2.0","id":null,"error":{"code":-32700,"message":"parse error at byte 41: unexpected data after the message"}}'

printf '%s\n' "$(call 50 checksum '{"text":"\ud800"}')" "$(call 51 checksum '{"text":"\udc00x"}')" "$(call 52 checksum '{"text":"a\qb"}')" |
    check "lone surrogates and bad escapes are -32700" '{"jsonrpc":"2.0","id":null,"error":{"code":-32700,"message":"parse error at byte 96: lone high surrogate in \\u escape"}}
{"jsonrpc":"2.0","id":null,"error":{"code":-32700,"message":"parse error at byte 96: lone low surrogate in \\u escape"}}
{"jsonrpc":"2.0","id":null,"error":{"code":-32700,"message":"parse error at byte 97: bad escape in string"}}'

printf '{"jsonrpc":"2.0","id":53,"method":"ping","x":"\xff"}\n{"jsonrpc":"2.0","id":2,"method":"ping"}\n' |
    check "invalid UTF-8 is -32700" '{"jsonrpc":"2.0","id":null,"error":{"code":-32700,"message":"parse error at byte 46: invalid UTF-8"}}
'"$PING2"

{ printf '{"jsonrpc":"2.0","id":9,"method":"tools/call","params":{"name":"checksum","arguments":{"text":"'
  head -c 2097152 /dev/zero | tr '\0' a
  printf '"}}}\n{"jsonrpc":"2.0","id":2,"method":"ping"}\n'; } |
    check "a 2 MiB line is refused and skipped" '{"jsonrpc":"2.0","id":null,"error":{"code":-32600,"message":"invalid request: line longer than 1048576 bytes, skipped"}}
'"$PING2"

{ head -c 200000 /dev/zero | tr '\0' '['; printf '\n{"jsonrpc":"2.0","id":2,"method":"ping"}\n'; } |
    check "deep nesting is refused, not a stack overflow" '{"jsonrpc":"2.0","id":null,"error":{"code":-32700,"message":"parse error at byte 128: nesting too deep"}}
'"$PING2"

printf '\n   \r\n{"jsonrpc":"2.0","id":2,"method":"ping"}\r\n{"jsonrpc":"2.0","id":3,"method":"ping"}' |
    check "blank lines, CRLF and a last line without newline" "$PING2"'
{"jsonrpc":"2.0","id":3,"result":{}}'

# --- an interactive client: each answer comes before stdin closes --------------------------------

coproc SRV { "${SERVER[@]}"; }
answers=""
for i in 1 2; do
    echo "{\"jsonrpc\":\"2.0\",\"id\":$i,\"method\":\"ping\"}" >&"${SRV[1]}"
    IFS= read -r -t 20 line <&"${SRV[0]}" || line="(no answer within 20 s)"
    answers+="$line;"
done
exec {SRV[1]}>&-
wait "$SRV_PID" 2>/dev/null
compare "answers each request while stdin stays open" \
    '{"jsonrpc":"2.0","id":1,"result":{}};{"jsonrpc":"2.0","id":2,"result":{}};' "$answers"

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
