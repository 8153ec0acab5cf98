// Command gen writes test vectors of Go's encoding/json: every case is a value, described in
// a small typed form the Python tests can rebuild, and the bytes json.Marshal (or
// json.Encoder.Encode) of the Go toolchain running this program gives for it, or its error.
//
// Usage: go run . > go<version>.json (see scripts/gen-gojson-vectors.sh). Standard library
// only, and Go 1.15 source (no generics, no any) so that old toolchains build it.
//
// Value descriptions, each a JSON array:
//
//	["null"]                      nil interface
//	["bool", true]                bool
//	["int", "-12"]                int64 (uint64 when above the int64 range), decimal text
//	["float", "0x3ff0..."]        float64 from its IEEE 754 bits
//	["str", "68c3a9"]             string from its bytes in hex (may be invalid UTF-8)
//	["bytes", "00ff"|null]        []byte from hex; null is a nil slice
//	["raw", "7b7d"|null]          json.RawMessage from hex; null is a nil RawMessage
//	["number", "2.50"]            json.Number
//	["array", [desc...]|null]     []interface{}; null is a nil slice
//	["object", [[name, desc]...]] a struct, fields in this order, `json:"name"` tags
//	["map", [[keyhex, desc]...]|null] map[string]interface{} (Go sorts the keys); null is nil
package main

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"reflect"
	"runtime"
	"strconv"
	"strings"
	"unicode/utf8"
)

type desc []interface{}

type testCase struct {
	Name   string `json:"name"`
	API    string `json:"api"`
	Value  desc   `json:"value"`
	Out    string `json:"out,omitempty"`
	OutHex string `json:"out_hex,omitempty"`
	Error  string `json:"error,omitempty"`
}

func null() desc              { return desc{"null"} }
func boolean(b bool) desc     { return desc{"bool", b} }
func integer(i int64) desc    { return desc{"int", strconv.FormatInt(i, 10)} }
func unsigned(u uint64) desc  { return desc{"int", strconv.FormatUint(u, 10)} }
func float(f float64) desc    { return desc{"float", fmt.Sprintf("0x%016x", math.Float64bits(f))} }
func str(s string) desc       { return desc{"str", hex.EncodeToString([]byte(s))} }
func byteSlice(b []byte) desc { return desc{"bytes", hexOrNull(b)} }
func raw(b []byte) desc       { return desc{"raw", hexOrNull(b)} }
func number(s string) desc    { return desc{"number", s} }
func array(items ...desc) desc {
	if items == nil {
		items = []desc{} // a nil slice would be written as null
	}
	return desc{"array", items}
}
func nilArray() desc                        { return desc{"array", nil} }
func nilMap() desc                          { return desc{"map", nil} }
func member(k string, v desc) []interface{} { return []interface{}{k, v} }

func object(members ...[]interface{}) desc { return desc{"object", members} }

func goMap(members ...[]interface{}) desc {
	hexed := make([]interface{}, len(members))
	for i, m := range members {
		hexed[i] = []interface{}{hex.EncodeToString([]byte(m[0].(string))), m[1]}
	}
	return desc{"map", hexed}
}

func hexOrNull(b []byte) interface{} {
	if b == nil {
		return nil
	}
	return hex.EncodeToString(b)
}

func mustHex(s string) []byte {
	b, err := hex.DecodeString(s)
	if err != nil {
		panic(err)
	}
	return b
}

// build turns a description into the Go value it stands for.
func build(d desc) interface{} {
	switch d[0] {
	case "null":
		return nil
	case "bool":
		return d[1].(bool)
	case "int":
		text := d[1].(string)
		if i, err := strconv.ParseInt(text, 10, 64); err == nil {
			return i
		}
		u, err := strconv.ParseUint(text, 10, 64)
		if err != nil {
			panic(err)
		}
		return u
	case "float":
		bits, err := strconv.ParseUint(d[1].(string), 0, 64)
		if err != nil {
			panic(err)
		}
		return math.Float64frombits(bits)
	case "str":
		return string(mustHex(d[1].(string)))
	case "bytes":
		if d[1] == nil {
			return []byte(nil)
		}
		return mustHex(d[1].(string))
	case "raw":
		if d[1] == nil {
			return json.RawMessage(nil)
		}
		return json.RawMessage(mustHex(d[1].(string)))
	case "number":
		return json.Number(d[1].(string))
	case "array":
		if d[1] == nil {
			return []interface{}(nil)
		}
		items := d[1].([]desc)
		out := make([]interface{}, len(items))
		for i, item := range items {
			out[i] = build(item)
		}
		return out
	case "object":
		return buildStruct(d[1].([][]interface{}))
	case "map":
		if d[1] == nil {
			return map[string]interface{}(nil)
		}
		out := map[string]interface{}{}
		for _, m := range d[1].([]interface{}) {
			pair := m.([]interface{})
			out[string(mustHex(pair[0].(string)))] = build(pair[1].(desc))
		}
		return out
	}
	panic(fmt.Sprintf("unknown description %v", d))
}

// buildStruct makes a struct type with one interface{} field per member, tagged with the
// member's name, so json.Marshal writes the members in their order (as for any Go struct).
func buildStruct(members [][]interface{}) interface{} {
	fields := make([]reflect.StructField, len(members))
	for i, m := range members {
		name := m[0].(string)
		if strings.ContainsAny(name, "\",\\") || name == "" {
			panic("not a usable json tag: " + name)
		}
		fields[i] = reflect.StructField{
			Name: fmt.Sprintf("F%d", i),
			Type: reflect.TypeOf((*interface{})(nil)).Elem(),
			Tag:  reflect.StructTag(fmt.Sprintf("json:%q", name)),
		}
	}
	v := reflect.New(reflect.StructOf(fields)).Elem()
	for i, m := range members {
		if value := build(m[1].(desc)); value != nil {
			v.Field(i).Set(reflect.ValueOf(value))
		}
	}
	return v.Interface()
}

func run(name, api string, d desc) testCase {
	c := testCase{Name: name, API: api, Value: d}
	var out []byte
	var err error
	switch api {
	case "marshal":
		out, err = json.Marshal(build(d))
	case "encode":
		var buf bytes.Buffer
		err = json.NewEncoder(&buf).Encode(build(d))
		out = buf.Bytes()
	default:
		panic(api)
	}
	switch {
	case err != nil:
		c.Error = err.Error()
	case utf8.Valid(out) && len(out) > 0:
		c.Out = string(out)
	default:
		c.OutHex = hex.EncodeToString(out)
	}
	return c
}

// rng is splitmix64: the same sequence on every Go version (math/rand promises that too,
// but this keeps the vectors independent of any library).
type rng struct{ state uint64 }

func (r *rng) next() uint64 {
	r.state += 0x9e3779b97f4a7c15
	z := r.state
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9
	z = (z ^ (z >> 27)) * 0x94d049bb133111eb
	return z ^ (z >> 31)
}

func (r *rng) intn(n int) int { return int(r.next() % uint64(n)) }

func stringCases() []testCase {
	var cases []testCase
	add := func(name, s string) { cases = append(cases, run("string/"+name, "marshal", str(s))) }
	for b := 0; b < 0x20; b++ {
		add(fmt.Sprintf("control-%02x", b), string([]byte{'a', byte(b), 'z'}))
	}
	for _, s := range []struct{ name, text string }{
		{"empty", ""},
		{"ascii", "hello, world"},
		{"del-7f", "a\x7fz"},
		{"quote", `a"z`},
		{"backslash", `a\z`},
		{"backslash-b", `\b\f\n`},
		{"slash", "a/z"},
		{"apostrophe", "a'z"},
		{"html", "<a href='x'>&amp;</a>"},
		{"lt", "<"},
		{"gt", ">"},
		{"amp", "&"},
		{"u2028", "a\u2028z"},
		{"u2029", "a\u2029z"},
		{"u2027-u202a", "\u2027\u202a"},
		{"latin1-e-acute", "é"},
		{"u0080", "\u0080"},
		{"u07ff", "\u07ff"},
		{"u0800", "\u0800"},
		{"cjk", "日本語"},
		{"ufeff-bom", "\ufeffx"},
		{"ufffd-valid", "\ufffd"},
		{"uffff", "\uffff"},
		{"ue000", "\ue000"},
		{"astral-emoji", "\U0001f600"},
		{"u10ffff", "\U0010ffff"},
		{"mixed", "<a&b>\u2028\u2029\x00\x01\x08\x0c\n\r\t\"\\é日本\U0001f600\x7f"},
		{"invalid-80", "a\x80z"},
		{"invalid-ff", "a\xffz"},
		{"invalid-fe-ff", "\xfe\xff"},
		{"invalid-c0-80-overlong", "\xc0\x80"},
		{"invalid-c1-bf-overlong", "\xc1\xbf"},
		{"invalid-e0-80-80-overlong", "\xe0\x80\x80"},
		{"invalid-f0-80-80-80-overlong", "\xf0\x80\x80\x80"},
		{"invalid-c2-then-ascii", "\xc2a"},
		{"invalid-c2-at-end", "a\xc2"},
		{"invalid-e2-80-then-ascii", "\xe2\x80a"},
		{"invalid-e2-80-at-end", "a\xe2\x80"},
		{"invalid-e2-28-a1", "\xe2\x28\xa1"},
		{"invalid-f0-9f-98-truncated", "\xf0\x9f\x98z"},
		{"invalid-surrogate-ed-a0-80", "\xed\xa0\x80"},
		{"invalid-surrogate-ed-bf-bf", "\xed\xbf\xbf"},
		{"invalid-surrogate-pair", "\xed\xa0\xbd\xed\xb8\x80"},
		{"invalid-f4-90-80-80-above-max", "\xf4\x90\x80\x80"},
		{"invalid-f5", "\xf5\x80\x80\x80"},
		{"invalid-then-u2028", "\xe2\x80\xe2\x80\xa8"},
		{"invalid-then-html", "\xff<\xfe>"},
		{"invalid-continuations", "\x80\x81\x82\xbf"},
	} {
		add(s.name, s.text)
	}
	all := make([]byte, 256)
	for i := range all {
		all[i] = byte(i)
	}
	add("all-bytes", string(all))
	// Random strings over an alphabet of what matters to an encoder.
	pieces := []string{
		"a", "Z", "0", " ", "\"", "\\", "/", "<", ">", "&", "\x00", "\x08", "\x0c", "\x1f",
		"\n", "\t", "\x7f", "é", "€", "\u2028", "\u2029", "\U0001f600", "\xff", "\x80",
		"\xe2", "\xe2\x80", "\xf0\x9f", "\xed\xa0\x80", "\ufffd", "\xc0",
	}
	r := &rng{state: 20260101}
	for i := 0; i < 60; i++ {
		var b strings.Builder
		for n := r.intn(16); n > 0; n-- {
			b.WriteString(pieces[r.intn(len(pieces))])
		}
		add(fmt.Sprintf("random-%02d", i), b.String())
	}
	return cases
}

func floatCases() []testCase {
	var cases []testCase
	add := func(name string, f float64) {
		cases = append(cases, run("float/"+name, "marshal", float(f)))
	}
	// Decimal inputs, parsed by strconv like a Go literal would be.
	for _, text := range []string{
		"0", "1", "51", "51.05", "1e-7", "1e21", "1e20", "1.5e-7", "123456789.125", "1e-6",
		"9.999e-7", "0.1", "0.3333333333333333", "2.5e300", "-1e-300", "5e-324",
		"1.7976931348623157e308", "100", "12345678901234567890", "0.000001234", "1e22",
		"3e-10", "-0", "0.5", "1.5", "-2.5", "100.25", "0.30000000000000004",
		"9007199254740992", "9007199254740993", "9223372036854775808",
		"18446744073709551616", "1e15", "1e16", "1e17", "123456789012345678", "1e-5",
		"5e-7", "1.7e-7", "3.4028234663852886e38", "2.2250738585072014e-308",
		"2.225073858507201e-308", "4.9406564584124654e-324", "2.9802322387695312e-8",
		"1.2345678901234567e-300", "0.3", "2.5", "1e100", "1e-100", "-1e21", "-1e-7",
		"999999999999999900000", "0.0000009999999999999999", "123e-20", "7e22",
		"1e23", "8.41e21", "5e-310", "1.1", "2.675", "0.000001", "0.0000010000000000000002",
	} {
		f, err := strconv.ParseFloat(text, 64)
		if err != nil {
			panic(err)
		}
		add(text, f)
	}
	add("nextbelow-1e-6", math.Nextafter(1e-6, 0))
	add("nextabove-1e-6", math.Nextafter(1e-6, 1))
	add("nextbelow-1e21", math.Nextafter(1e21, 0))
	add("nextabove-1e21", math.Nextafter(1e21, math.Inf(1)))
	add("max", math.MaxFloat64)
	add("-max", -math.MaxFloat64)
	add("smallest", math.SmallestNonzeroFloat64)
	add("-smallest", -math.SmallestNonzeroFloat64)
	add("2^53", 1<<53)
	add("2^63", 1<<63)
	add("2^64", 1<<64)
	add("2^-1074", math.Ldexp(1, -1074))
	add("2^-1022", math.Ldexp(1, -1022))
	add("2^1023", math.Ldexp(1, 1023))
	r := &rng{state: 1626}
	for i := 0; i < 150; i++ { // any finite bit pattern
		bits := r.next()
		if (bits>>52)&0x7ff == 0x7ff {
			bits &^= 1 << 62
		}
		add(fmt.Sprintf("random-bits-%03d", i), math.Float64frombits(bits))
	}
	for i := 0; i < 150; i++ { // decimal-looking values around the 1e-6 and 1e21 switches
		digits := strconv.FormatUint(r.next()%100000000000000000, 10)
		digits = digits[:1+r.intn(len(digits))]
		text := fmt.Sprintf("%se%d", digits, r.intn(40)-28)
		f, err := strconv.ParseFloat(text, 64)
		if err != nil {
			panic(err)
		}
		if r.intn(2) == 0 {
			f = -f
		}
		add(fmt.Sprintf("random-decimal-%03d", i), f)
	}
	add("nan", math.NaN())
	add("+inf", math.Inf(1))
	add("-inf", math.Inf(-1))
	return cases
}

func scalarCases() []testCase {
	var cases []testCase
	add := func(name string, d desc) { cases = append(cases, run(name, "marshal", d)) }
	add("null", null())
	add("bool/true", boolean(true))
	add("bool/false", boolean(false))
	for _, i := range []int64{0, 1, -1, 42, -5, 1 << 53, 1<<53 + 1, math.MaxInt64, math.MinInt64} {
		add("int/"+strconv.FormatInt(i, 10), integer(i))
	}
	add("int/max-uint64", unsigned(math.MaxUint64))
	add("number/2.50", number("2.50"))
	add("number/1e-7", number("1e-7"))
	add("number/-0", number("-0"))
	add("bytes/nil", byteSlice(nil))
	add("bytes/empty", byteSlice([]byte{}))
	add("bytes/one", byteSlice([]byte("a")))
	add("bytes/two", byteSlice([]byte("ab")))
	add("bytes/three", byteSlice([]byte("abc")))
	add("bytes/abcd01", byteSlice([]byte("abcd01")))
	all := make([]byte, 256)
	for i := range all {
		all[i] = byte(i)
	}
	add("bytes/all", byteSlice(all))
	add("bytes/long", byteSlice(bytes.Repeat([]byte("\xfb\xff\xbf<>&"), 400)))
	return cases
}

func rawCases() []testCase {
	var cases []testCase
	add := func(name string, b []byte) { cases = append(cases, run("raw/"+name, "marshal", raw(b))) }
	add("nil", nil)
	add("null", []byte("null"))
	add("spaced-object", []byte(" { \"a\" : [1, 2.50, \"<x>\u2028\" ] } "))
	add("whitespace-kinds", []byte("\t[\r\n1 ,\n\t2\r]\n"))
	add("numbers-kept", []byte(`[2.50,1e-7,-0,1E+2,0.000001,12345678901234567890123]`))
	add("escapes-kept", []byte(`"\u00e9\/\b\f\u2028 \" \\ \u003c"`))
	add("html-in-string", []byte(`{"<k>":"a&b"}`))
	add("u2029-in-string", []byte("\"\u2029\""))
	add("non-ascii-kept", []byte("\"é日\U0001f600\""))
	add("nested", []byte(`{"a":{"b":[{"c":null},true,false]}}`))
	add("invalid-utf8-in-string", []byte("\"a\xffb\xe2\x80\""))
	add("string-top", []byte(`"<&>"`))
	add("large-exponent", []byte(`1e999`))
	for _, bad := range []string{"{", "[1,]", "NaN", "Infinity", "1 2", "\xff", "01", "1.",
		"\"a\x01\"", "\"\\x\"", "\ufeff1", "{\"a\"}", "tru", "[1]]"} {
		add("invalid-"+hex.EncodeToString([]byte(bad)), []byte(bad))
	}
	return cases
}

func compositeCases() []testCase {
	var cases []testCase
	add := func(name string, d desc) { cases = append(cases, run(name, "marshal", d)) }
	add("array/empty", array())
	add("array/nil", nilArray())
	add("array/mixed", array(null(), boolean(true), integer(-5), float(0.5), str("<"),
		array(), nilArray(), byteSlice([]byte("hi")), raw([]byte(" {\"x\" : 1} "))))
	add("map/empty", goMap())
	add("map/nil", nilMap())
	add("map/sorted-keys", goMap(
		member("b", integer(1)), member("a", integer(2)), member("B", integer(3)),
		member("", integer(4)), member("é", integer(5)), member("日", integer(6)),
		member("\U0001f600", integer(7)), member("\u2028", integer(8)), member("<", integer(9)),
		member("a b", integer(10)), member("aa", integer(11)), member("a\x00", integer(12)),
		member("\uffff", integer(13)), member("\ue000", integer(14)), member("~", integer(15)),
	))
	add("map/invalid-utf8-key", goMap(member("a\xffb", integer(1)), member("a", integer(2))))
	add("map/nested", goMap(
		member("z", goMap(member("y", null()), member("x", array(goMap())))),
		member("m", object(member("q", integer(1)), member("p", integer(2)))),
	))
	add("object/ordered", object(
		member("z", str("last letter first")), member("a", integer(1)),
		member("m", goMap(member("k2", boolean(false)), member("k1", boolean(true)))),
		member("l", nilArray()), member("e", array()), member("b", byteSlice([]byte("abcd01"))),
		member("nb", byteSlice(nil)), member("r", raw([]byte(`{"y" : [ 1 ]}`))),
		member("nr", raw(nil)), member("f", float(51.05)), member("n", null()),
	))
	add("object/html-names", object(member("x<y", integer(1)), member("a&b>", integer(2))))
	add("object/workload-like", object(
		member("workload_id", integer(1)), member("node_id", str("node-a")),
		member("signing_request_provision", object(
			member("signers", array()), member("quorum_min", integer(0)))),
		member("id", integer(42)), member("json", str("{\"domain\":\"a<b>.example\"}")),
		member("result", object(
			member("category", integer(7)), member("data_json", raw([]byte(`{"ip": "10.0.0.1"}`))),
			member("message", str("\x08\x0c\xff")), member("epoch", integer(1700000000)))),
		member("domain", str("a.gw.example")), member("ips", array(str("10.0.0.1"))),
	))
	add("object/error-inside", object(member("a", integer(1)), member("f", float(math.Inf(1)))))
	return cases
}

func encoderCases() []testCase {
	var cases []testCase
	add := func(name string, d desc) { cases = append(cases, run("encode/"+name, "encode", d)) }
	add("null", null())
	add("string", str("<a&b>\x08\x0c\u2028\xff"))
	add("float", float(1e21))
	add("array-empty", array())
	add("array-nil", nilArray())
	add("object", object(member("error", str("not found")), member("n", integer(3))))
	add("map", goMap(member("b", integer(1)), member("a", raw([]byte(" [ 1 ] ")))))
	add("raw", raw([]byte(" {\"a\" : \"<\"} ")))
	add("nan", float(math.NaN()))
	return cases
}

func main() {
	var cases []testCase
	for _, group := range [][]testCase{
		scalarCases(), stringCases(), floatCases(), rawCases(), compositeCases(), encoderCases(),
	} {
		cases = append(cases, group...)
	}
	seen := map[string]bool{}
	var out bytes.Buffer
	out.WriteString("{\n")
	fmt.Fprintf(&out, "  \"go_version\": %q,\n", runtime.Version())
	out.WriteString("  \"generator\": \"tests/vectors/gojson/gen.go\",\n")
	out.WriteString("  \"cases\": [\n")
	for i, c := range cases {
		if seen[c.Name] {
			panic("duplicate case name " + c.Name)
		}
		seen[c.Name] = true
		var line bytes.Buffer
		enc := json.NewEncoder(&line)
		enc.SetEscapeHTML(false) // the file is read by tests, not by a browser
		if err := enc.Encode(c); err != nil {
			panic(err)
		}
		out.WriteString("    ")
		out.Write(bytes.TrimRight(line.Bytes(), "\n"))
		if i < len(cases)-1 {
			out.WriteString(",")
		}
		out.WriteString("\n")
	}
	out.WriteString("  ]\n}\n")
	if _, err := os.Stdout.Write(out.Bytes()); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}
