package coordinator

import (
	"bytes"
	"mime/multipart"
	"testing"
)

func multipartFile(t *testing.T, name, content string) ([]byte, string) {
	t.Helper()
	var b bytes.Buffer
	w := multipart.NewWriter(&b)
	f, err := w.CreateFormFile("file", name)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = f.Write([]byte(content))
	_ = w.Close()
	return b.Bytes(), w.FormDataContentType()
}
