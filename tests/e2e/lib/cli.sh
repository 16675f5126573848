# shellcheck shell=bash
# The `nm-vpn-netns` command's output, as the tests-cli-*.sh scenarios check it.

# The value at PATH (keys and array indexes joined by dots: vpns.0.tun.name) of the JSON text $1:
# a string as it is, anything else as compact JSON with its keys sorted (true, null, ["a","b"],
# {"a":1,"b":2}); empty when $1 is not JSON or has nothing there.
json_path() {
    /usr/bin/python3 -c '
import json, sys
try:
    v = json.loads(sys.argv[1])
    for key in sys.argv[2].split("."):
        v = v[int(key)] if isinstance(v, list) else v[key]
except (ValueError, KeyError, IndexError, TypeError):
    sys.exit(0)
print(v if isinstance(v, str) else json.dumps(v, separators=(",", ":"), sort_keys=True))' "$1" "$2"
}

# WHAT JSON PATH VALUE: the value at PATH of JSON is VALUE (as json_path prints it).
expect_json_path() {
    local got
    got=$(json_path "$2" "$3")
    [[ $got == "$4" ]] || expect_failed "$1" "$3 = $4" "$3 = $got"$'\n'"in: $2"
}


# The object of the JSON array $1 whose field $2 is $3, as compact JSON; empty when there is none.
json_find() {
    /usr/bin/python3 -c '
import json, sys
try:
    found = [o for o in json.loads(sys.argv[1]) if o.get(sys.argv[2]) == sys.argv[3]]
except (ValueError, AttributeError, TypeError):
    found = []
if found:
    print(json.dumps(found[0], separators=(",", ":"), sort_keys=True))' "$1" "$2" "$3"
}
