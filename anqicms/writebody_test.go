package anqicms

import (
	"bytes"
	"errors"
	"mime/multipart"
	"slices"
	"testing"

	"github.com/valyala/fasthttp"
)

var (
	ctJSON = []byte("application/json")
	ctForm = []byte("application/x-www-form-urlencoded")
)

func writeIDs(t *testing.T, src IDSource, ct, query, body string) ([]int64, error) {
	t.Helper()
	var args fasthttp.Args
	args.Parse(query)
	return WriteOrderIDs(src, []byte(ct), &args, []byte(body))
}

var sendRule = IDSource{Kind: "json", Field: "comm_order_id"}

func TestWriteOrderIDs_JSONIsReadAsAnqiCMSBindsIt(t *testing.T) {
	for _, c := range []struct {
		name, ct, body string
		want           int64
	}{
		{"number", "application/json", `{"comm_order_id":308,"content":"hi"}`, 308},
		{"unicode escape in a string id", "application/json", `{"comm_order_id":"\u0033\u0030\u0038"}`, 308},
		{"unicode escape in the key", "application/json", `{"comm\u005forder_id":308}`, 308},
		{"key in another case", "application/json", `{"COMM_Order_ID":308}`, 308},
		{"last duplicate wins", "application/json", `{"comm_order_id":1,"Comm_Order_Id":308}`, 308},
		{"later null keeps the earlier value", "application/json", `{"comm_order_id":308,"comm_order_id":null}`, 308},
		{"later \"null\" keeps a string id", "application/json", `{"comm_order_id":"308","comm_order_id":"null"}`, 308},
		{"labelled as a form", "application/x-www-form-urlencoded", `{"comm_order_id":308}`, 308},
		{"labelled as a form, upper case", "APPLICATION/X-WWW-FORM-URLENCODED", `{"comm_order_id":308}`, 308},
		{"labelled as a form-like type", "application/x-www-form-urlencodedx", `{"comm_order_id":308}`, 308},
		{"labelled as multipart", "multipart/form-data; boundary=x", `{"comm_order_id":308}`, 308},
		{"no Content-Type", "", ` {"comm_order_id":308} `, 308},
		{"string with leading zeros and plus", "application/json", `{"comm_order_id":"+0308"}`, 308},
		{"max int64", "application/json", `{"comm_order_id":9223372036854775807}`, 1<<63 - 1},
	} {
		got, err := writeIDs(t, sendRule, c.ct, "", c.body)
		if err != nil || !slices.Equal(got, []int64{c.want}) {
			t.Errorf("%s: %s: got %v, %v; want [%d]", c.name, c.body, got, err, c.want)
		}
	}
}

func TestWriteOrderIDs_UnreadableJSONIdsAreErrors(t *testing.T) {
	for _, c := range []struct{ name, ct, body string }{
		{"a form body on a JSON route", "application/x-www-form-urlencoded", "comm_order_id=308&content=hi"},
		{"trailing bytes", "application/json", `{"comm_order_id":308} x`},
		{"two objects", "application/json", `{"comm_order_id":308}{"comm_order_id":1}`},
		{"truncated", "application/json", `{"comm_order_id":308`},
		{"empty", "application/json", ``},
		{"null body", "application/json", `null`},
		{"array", "application/json", `[{"comm_order_id":308}]`},
		{"nested only", "application/json", `{"data":{"comm_order_id":308}}`},
		{"absent", "application/json", `{"content":"hi"}`},
		{"only null", "application/json", `{"comm_order_id":null}`},
		{"zero", "application/json", `{"comm_order_id":0}`},
		{"negative", "application/json", `{"comm_order_id":-3}`},
		{"float", "application/json", `{"comm_order_id":308.0}`},
		{"exponent", "application/json", `{"comm_order_id":3e2}`},
		{"bool", "application/json", `{"comm_order_id":true}`},
		{"object", "application/json", `{"comm_order_id":{"id":308}}`},
		{"not a number string", "application/json", `{"comm_order_id":"308a"}`},
		{"spaces in the string", "application/json", `{"comm_order_id":" 308"}`},
		{"overflow", "application/json", `{"comm_order_id":9223372036854775808}`},
		{"last value unreadable", "application/json", `{"comm_order_id":308,"comm_order_id":"x"}`},
	} {
		got, err := writeIDs(t, sendRule, c.ct, "", c.body)
		if err == nil || !errors.Is(err, ErrNoOrderID) || got != nil {
			t.Errorf("%s: %s: got %v, %v; want an ErrNoOrderID", c.name, c.body, got, err)
		}
	}
}

func multipartBody(t *testing.T, fields ...[2]string) (ct string, body string) {
	t.Helper()
	var b bytes.Buffer
	w := multipart.NewWriter(&b)
	for _, f := range fields {
		if err := w.WriteField(f[0], f[1]); err != nil {
			t.Fatal(err)
		}
	}
	if fw, err := w.CreateFormFile("id", "id.txt"); err != nil {
		t.Fatal(err)
	} else {
		fw.Write([]byte("999")) // a file part is not a form value
	}
	w.Close()
	return w.FormDataContentType(), b.String()
}

func TestWriteOrderIDs_FormRulesReadEveryValue(t *testing.T) {
	form := IDSource{Kind: "form", Field: "id"}
	mct, mbody := multipartBody(t, [2]string{"id", "7"}, [2]string{"title", "x"}, [2]string{"id", "8"}, [2]string{"id", "7"})
	for _, c := range []struct {
		name, ct, query, body string
		want                  []int64
	}{
		{"urlencoded", "application/x-www-form-urlencoded", "", "id=7&title=x", []int64{7}},
		{"urlencoded with charset", "application/x-www-form-urlencoded; charset=utf-8", "", "id=7", []int64{7}},
		{"upper case type", "APPLICATION/X-WWW-FORM-URLENCODED", "", "id=7", []int64{7}},
		{"repeated field", "application/x-www-form-urlencoded", "", "id=7&id=8&id=7", []int64{7, 8}},
		{"escaped key", "application/x-www-form-urlencoded", "", "i%64=7", []int64{7}},
		{"empty value skipped", "application/x-www-form-urlencoded", "", "id=&id=7", []int64{7}},
		{"query values count too", "application/x-www-form-urlencoded", "id=9", "id=7", []int64{7, 9}},
		{"multipart, repeated", mct, "", mbody, []int64{7, 8}},
		{"multipart, mixed case type", "Multipart/Form-Data; boundary=" + mct[len("multipart/form-data; boundary="):], "", mbody, []int64{7, 8}},
	} {
		got, err := writeIDs(t, form, c.ct, c.query, c.body)
		if err != nil || !slices.Equal(got, c.want) {
			t.Errorf("%s: got %v, %v; want %v", c.name, got, err, c.want)
		}
	}
	for _, c := range []struct{ name, ct, body string }{
		{"a type that only starts like a form", "application/x-www-form-urlencodedx", "id=7"},
		{"JSON", "application/json", `{"id":7}`},
		{"no type", "", "id=7"},
		{"bad escape", "application/x-www-form-urlencoded", "id=7&x=%zz"},
		{"semicolon", "application/x-www-form-urlencoded", "x=1;id=7"},
		{"not an integer", "application/x-www-form-urlencoded", "id=7&id=7a"},
		{"absent", "application/x-www-form-urlencoded", "title=x"},
		{"multipart without boundary", "multipart/form-data", mbody},
		{"multipart, wrong boundary", "multipart/form-data; boundary=nope", mbody},
	} {
		got, err := writeIDs(t, form, c.ct, "", c.body)
		if !errors.Is(err, ErrNoOrderID) || got != nil {
			t.Errorf("%s: got %v, %v; want an ErrNoOrderID", c.name, got, err)
		}
	}
}

func TestWriteOrderIDs_QueryRules(t *testing.T) {
	q := IDSource{Kind: "query", Field: "id"}
	if got, err := writeIDs(t, q, "application/json", "id=5&id=6&id=5", `{"id":1}`); err != nil || !slices.Equal(got, []int64{5, 6}) {
		t.Fatalf("got %v, %v; want [5 6]", got, err)
	}
	for _, query := range []string{"", "x=5", "id=0", "id=abc", "id=5&id=-1"} {
		if got, err := writeIDs(t, q, "", query, ""); !errors.Is(err, ErrNoOrderID) {
			t.Errorf("%q: got %v, %v; want an ErrNoOrderID", query, got, err)
		}
	}
	if _, err := writeIDs(t, IDSource{Kind: "header", Field: "id"}, "", "id=5", ""); !errors.Is(err, ErrNoOrderID) {
		t.Fatalf("unknown kind: %v, want an ErrNoOrderID", err)
	}
}
