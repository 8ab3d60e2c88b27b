package openai

import "bytes"

// DefaultMaxEventBytes bounds one server-sent event in [SSEParser] when MaxEventBytes is 0.
const DefaultMaxEventBytes = 1 << 20

// Event is one server-sent event.
type Event struct {
	// Type is the event field; empty means the default type, "message".
	Type string
	// ID is the last id field seen.
	ID string
	// Data is the event's data lines joined by "\n". It is valid only during the callback
	// that receives it; copy it to keep it.
	Data []byte
}

// SSEParser parses a text/event-stream body fed in arbitrary chunks, following the
// WHATWG event-stream interpretation rules: lines end in "\r\n", "\n" or "\r" (also split
// across chunks), lines starting with ':' are comments, several data lines are joined with
// "\n", and a blank line dispatches the event. An incomplete event at the end of the stream is
// never dispatched. The zero value is ready to use; a parser is not safe for concurrent use.
type SSEParser struct {
	// MaxEventBytes bounds the bytes buffered for one event; a longer event is dropped and
	// counted in Dropped. 0 means [DefaultMaxEventBytes].
	MaxEventBytes int
	// Dropped counts events dropped for exceeding MaxEventBytes.
	Dropped int

	line      []byte // partial line carried from the previous chunk
	lineLen   int    // bytes in the partial line, including dropped ones
	data      []byte
	eventType string
	id        string
	hasData   bool
	afterCR   bool // the previous chunk ended in '\r', so a leading '\n' belongs to it
	overflow  bool // the current event is being dropped
}

// Feed parses chunk and calls emit for each complete event, in order. emit must not retain
// [Event.Data].
func (p *SSEParser) Feed(chunk []byte, emit func(Event)) {
	if p.afterCR && len(chunk) > 0 && chunk[0] == '\n' {
		chunk = chunk[1:]
	}
	p.afterCR = false
	for len(chunk) > 0 {
		i := bytes.IndexAny(chunk, "\r\n")
		if i < 0 {
			p.appendPartial(chunk)
			return
		}
		line := chunk[:i]
		next := i + 1
		if chunk[i] == '\r' {
			if next < len(chunk) {
				if chunk[next] == '\n' {
					next++
				}
			} else {
				p.afterCR = true
			}
		}
		chunk = chunk[next:]
		if p.lineLen > 0 {
			// The line began in an earlier chunk.
			p.appendPartial(line)
			p.lineLen = 0
			if p.overflow {
				p.line = p.line[:0]
				continue
			}
			line = p.line
		}
		p.processLine(line, emit)
		p.line = p.line[:0]
	}
}

func (p *SSEParser) limit() int {
	if p.MaxEventBytes > 0 {
		return p.MaxEventBytes
	}
	return DefaultMaxEventBytes
}

// appendPartial keeps part of a line, dropping the event once it grows past the limit.
func (p *SSEParser) appendPartial(b []byte) {
	p.lineLen += len(b)
	if p.overflow {
		return
	}
	if len(p.line)+len(b)+len(p.data) > p.limit() {
		p.startOverflow()
		return
	}
	p.line = append(p.line, b...)
}

func (p *SSEParser) startOverflow() {
	p.overflow = true
	p.line = p.line[:0]
	p.data = p.data[:0]
	p.hasData = false
}

func (p *SSEParser) processLine(line []byte, emit func(Event)) {
	if len(line) == 0 {
		p.dispatch(emit)
		return
	}
	if p.overflow || line[0] == ':' {
		return
	}
	field, value := line, []byte(nil)
	if i := bytes.IndexByte(line, ':'); i >= 0 {
		field, value = line[:i], line[i+1:]
		if len(value) > 0 && value[0] == ' ' {
			value = value[1:]
		}
	}
	switch string(field) {
	case "data":
		if len(p.data)+len(value)+1 > p.limit() {
			p.startOverflow()
			return
		}
		if p.hasData {
			p.data = append(p.data, '\n')
		}
		p.data = append(p.data, value...)
		p.hasData = true
	case "event":
		p.eventType = string(value)
	case "id":
		if bytes.IndexByte(value, 0) < 0 {
			p.id = string(value)
		}
	}
}

func (p *SSEParser) dispatch(emit func(Event)) {
	if p.overflow {
		p.overflow = false
		p.Dropped++
		p.eventType = ""
		return
	}
	if p.hasData {
		emit(Event{Type: p.eventType, ID: p.id, Data: p.data})
	}
	p.data = p.data[:0]
	p.hasData = false
	p.eventType = ""
}
