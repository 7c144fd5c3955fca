package main

import (
	"net"
	"os"
	"reflect"
	"strings"
	"testing"

	"github.com/rs/zerolog"

	"github.com/baton-init/baton/internal/decodetest"
)

// FuzzConfig feeds a value to the Decode of one field of config, chosen
// by field, and then to baton's own reading of the environment with that
// variable set. Every decoder keeps the decodetest contract; main's own
// types decode only to what they accept; and loadConfig agrees with the
// field's Decode: an empty value is the default, an error is the
// variable's name and Decode's error on one line, a value is that value
// with every other variable at its default (and recorded as set, if
// config records that for it). The other packages' fuzz
// targets check what their types decode to.
func FuzzConfig(f *testing.F) {
	for i := range configKeys {
		for _, v := range []string{"", "1", "auto", "0123456789abcdefSECRET", ":9090", "json", "debug", "true", "TERM:QUIT"} {
			f.Add(uint8(i), v)
		}
	}
	index := func(name string) uint8 {
		sf, _ := reflect.TypeFor[config]().FieldByName(name)
		return uint8(sf.Index[0])
	}
	f.Add(index("HTTPAddr"), "127.0.0.1:9090")
	f.Add(index("HTTPAddr"), "[::1]:0")
	f.Add(index("HTTPAddr"), "nocolon")
	f.Add(index("LogLevel"), "Debug")
	f.Add(index("LogFormat"), "console")
	// Whatever BATON_* the environment running the tests has must not
	// count: loadConfig would call it unknown or read it.
	for _, kv := range os.Environ() {
		if k, _, _ := strings.Cut(kv, "="); strings.HasPrefix(k, envPrefix+"_") {
			f.Setenv(k, "")
			os.Unsetenv(k)
		}
	}

	f.Fuzz(func(t *testing.T, field uint8, v string) {
		i := int(field) % len(configKeys) // the variables; the fields after them are not

		ft, key := reflect.TypeFor[config]().Field(i).Type, configKeys[i]
		got, err := decodetest.Fresh(t, func() decodetest.Decoder {
			return reflect.New(ft).Interface().(decodetest.Decoder)
		}, v)
		if err == nil {
			if msg := badMainValue(got, v); msg != "" {
				t.Errorf("%s=%q decodes to %v: %s", key, v, reflect.ValueOf(got).Elem(), msg)
			}
		}

		if strings.IndexByte(v, 0) >= 0 {
			return // no environment holds it
		}
		t.Setenv(key, v)
		cfg, lerr := loadConfig()
		want := defaultConfig()
		switch {
		case v == "":
			if lerr != nil || !reflect.DeepEqual(cfg, want) {
				t.Errorf("%s= (empty) gives %+v, %v; want the defaults", key, cfg, lerr)
			}
		case err != nil:
			if lerr == nil || lerr.Error() != key+": "+err.Error() {
				t.Errorf("%s=%q: loadConfig says %v; want %q", key, v, lerr, key+": "+err.Error())
			}
		default:
			reflect.ValueOf(want).Elem().Field(i).Set(reflect.ValueOf(got).Elem())
			want.reloadSignalSet = key == "BATON_RELOAD_SIGNAL"
			want.stopSignalSet = key == "BATON_STOP_SIGNAL"
			if lerr != nil || !reflect.DeepEqual(cfg, want) {
				t.Errorf("%s=%q: loadConfig gives %+v, %v; want %+v", key, v, cfg, lerr, want)
			}
		}
	})
}

// badMainValue says what is wrong with a value one of main's own types
// decoded v to, "" if nothing.
func badMainValue(d decodetest.Decoder, v string) string {
	switch d := d.(type) {
	case *httpAddr:
		if _, _, err := net.SplitHostPort(string(*d)); err != nil || string(*d) != v {
			return "not the host:port given"
		}
	case *tristate:
		if *d != "auto" && *d != "true" && *d != "false" {
			return "not auto, true or false"
		}
	case *logLevel:
		if l := zerolog.Level(*d); l < zerolog.DebugLevel || l > zerolog.ErrorLevel || l.String() != v {
			return "not the level given"
		}
	case *logFormat:
		if *d != "json" && *d != "console" && *d != "auto" {
			return "not json, console or auto"
		}
	}
	return ""
}
