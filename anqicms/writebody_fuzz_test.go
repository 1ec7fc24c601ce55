package anqicms

import (
	"encoding/json"
	"errors"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// The Go types AnqiCMS's request struct could give an order id field. The
// open-source code uses int64 and uint; a ",string" tag or a string field
// are what WriteOrderIDs also allows for, to be safe.
type (
	idInt64 struct {
		ID int64 `json:"comm_order_id"`
	}
	idUint64 struct {
		ID uint64 `json:"comm_order_id"`
	}
	idQuoted struct {
		ID int64 `json:"comm_order_id,string"`
	}
	idString struct {
		ID string `json:"comm_order_id"`
	}
)

// boundIDs is every order id a struct of one of those types binds from
// body without an Unmarshal error, i.e. every order AnqiCMS could change.
func boundIDs(body []byte) []int64 {
	var out []int64
	add := func(id int64) {
		if id > 0 && !slices.Contains(out, id) {
			out = append(out, id)
		}
	}
	var a idInt64
	if json.Unmarshal(body, &a) == nil {
		add(a.ID)
	}
	var b idUint64
	if json.Unmarshal(body, &b) == nil && b.ID <= 1<<63-1 {
		add(int64(b.ID))
	}
	var c idQuoted
	if json.Unmarshal(body, &c) == nil {
		add(c.ID)
	}
	var d idString
	if json.Unmarshal(body, &d) == nil {
		if id, err := strconv.ParseInt(d.ID, 10, 64); err == nil {
			add(id)
		}
	}
	return out
}

const fuzzBoundary = "b0undary"

func FuzzWriteOrderIDs(f *testing.F) {
	for _, s := range []string{
		`{"comm_order_id":308}`, `{"comm_order_id":"\u0033"}`, `{"COMM_ORDER_ID":3,"comm_order_id":null}`,
		`{"comm_order_id":"3","comm_order_id":"null"}`, `{"comm_order_id":3,"Comm_Order_Id":"4"}`,
		`{"comm_order_id":18446744073709551615}`, `{"comm_order_id":-1}`, `{"comm_order_id":1.5}`,
		`{"comm_order_id":"01"}`, `{"ｃomm_order_id":5}`, `{"comm_order_\u0069d":5}`, `null`, `[]`,
		`{"comm_order_id":5} `, `{"comm_order_id":5}x`,
	} {
		f.Add(uint8(0), "application/x-www-form-urlencoded", []byte(s))
		f.Add(uint8(0), "", []byte(s))
	}
	for _, s := range []string{"comm_order_id=5", "comm_order_id=5&comm_order_id=6", "comm_order_id=%35",
		"comm_order_id=5;x", "comm%5Forder_id=7", "comm_order_id=+5", "comm_order_id=", "a=b&comm_order_id=0"} {
		f.Add(uint8(1), "", []byte(s))
		f.Add(uint8(1), "APPLICATION/X-WWW-FORM-URLENCODED; charset=utf-8", []byte(s))
	}
	f.Add(uint8(1), "application/x-www-form-urlencodedx", []byte("comm_order_id=5"))
	for _, s := range []string{
		"--b0undary\r\nContent-Disposition: form-data; name=\"comm_order_id\"\r\n\r\n5\r\n--b0undary--\r\n",
		"--b0undary\r\nContent-Disposition: form-data; name=\"comm_order_id\"\r\n\r\n5\r\n--b0undary\r\nContent-Disposition: form-data; name=\"comm_order_id\"\r\n\r\n6\r\n--b0undary--\r\n",
		"--b0undary\r\nContent-Disposition: form-data; name=\"comm_order_id\"; filename=\"a\"\r\n\r\n5\r\n--b0undary--\r\n",
		"--b0undary\r\nContent-Disposition: form-data; name=\"comm_order_id\"\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n=35\r\n--b0undary--\r\n",
	} {
		f.Add(uint8(2), "", []byte(s))
		f.Add(uint8(2), "Multipart/Form-Data; boundary="+fuzzBoundary, []byte(s))
	}
	f.Fuzz(func(t *testing.T, mode uint8, ct string, body []byte) {
		var (
			src  IDSource
			want []int64 // ids the server binds; each must be named
		)
		switch mode % 3 {
		case 0:
			src = IDSource{Kind: "json", Field: "comm_order_id"}
			want = boundIDs(body)
			// AnqiCMS ignores Content-Type, and so must the JSON reader.
			a, aerr := WriteOrderIDs(src, []byte(ct), nil, body)
			b, berr := WriteOrderIDs(src, []byte("application/json"), nil, body)
			if !slices.Equal(a, b) || (aerr == nil) != (berr == nil) {
				t.Fatalf("Content-Type %q changes the JSON reading: %v %v, %v %v", ct, a, aerr, b, berr)
			}
		case 1:
			src = IDSource{Kind: "form", Field: "comm_order_id"}
			if ct == "" {
				ct = "application/x-www-form-urlencoded"
			}
			want = formBoundIDs(t, ct, body)
		case 2:
			src = IDSource{Kind: "form", Field: "comm_order_id"}
			if ct == "" {
				ct = "multipart/form-data; boundary=" + fuzzBoundary
			}
			want = formBoundIDs(t, ct, body)
		}
		got, err := WriteOrderIDs(src, []byte(ct), nil, body)
		if err != nil {
			if !errors.Is(err, ErrNoOrderID) || got != nil {
				t.Fatalf("error %v with ids %v", err, got)
			}
			return // the caller fails safe
		}
		if len(got) == 0 {
			t.Fatal("no ids and no error")
		}
		for i, id := range got {
			if id <= 0 || slices.Contains(got[:i], id) {
				t.Fatalf("ids %v: not distinct and positive", got)
			}
		}
		for _, id := range want {
			if !slices.Contains(got, id) {
				t.Fatalf("%s %q: the server binds order %d, WriteOrderIDs named only %v", src.Kind, body, id, got)
			}
		}
		if src.Kind == "json" && len(got) != 1 {
			t.Fatalf("a JSON body names one order, got %v", got)
		}
	})
}

// formBoundIDs is every positive id net/http's form parsing finds in body.
func formBoundIDs(t *testing.T, ct string, body []byte) []int64 {
	r, err := http.NewRequest(http.MethodPost, "http://x/", strings.NewReader(string(body)))
	if err != nil {
		t.Fatal(err)
	}
	r.Header.Set("Content-Type", ct)
	r.ParseMultipartForm(1 << 20) // errors leave what parsed, as servers use it
	if r.MultipartForm != nil {
		defer r.MultipartForm.RemoveAll()
	}
	var out []int64
	for _, v := range r.PostForm["comm_order_id"] {
		if id, err := strconv.ParseInt(v, 10, 64); err == nil && id > 0 && !slices.Contains(out, id) {
			out = append(out, id)
		}
	}
	return out
}
