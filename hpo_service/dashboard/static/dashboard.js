// Draws the study page's charts from the JSON block the server embedded.
// Loaded as a file (CSP forbids inline scripts); uses the vendored ECharts, SVG renderer.
(function () {
  "use strict";

  var source = document.getElementById("study-data");
  if (!source || typeof echarts === "undefined") {
    return;
  }
  var data = JSON.parse(source.textContent);
  var completed = data.trials.filter(function (t) { return t.value !== null; });

  function chart(element, option) {
    var instance = echarts.init(element, null, { renderer: "svg" });
    instance.setOption(option);
    window.addEventListener("resize", function () { instance.resize(); });
    element.setAttribute("data-rendered", "true");
    return instance;
  }

  function empty(element, message) {
    var note = document.createElement("p");
    note.className = "muted empty-chart";
    note.textContent = message;
    element.appendChild(note);
    element.setAttribute("data-rendered", "empty");
  }

  function history(element) {
    chart(element, {
      title: { text: "Optimisation history", left: "center", textStyle: { fontSize: 14 } },
      tooltip: { trigger: "item" },
      legend: { bottom: 0, data: [data.metric, "best so far"] },
      grid: { left: 60, right: 20, top: 40, bottom: 50 },
      xAxis: { type: "value", name: "trial", nameLocation: "middle", nameGap: 25 },
      yAxis: { type: "value", name: data.metric, scale: true },
      series: [
        {
          name: data.metric,
          type: "scatter",
          symbolSize: 6,
          data: completed.map(function (t) { return [t.number, t.value]; })
        },
        {
          name: "best so far",
          type: "line",
          step: "end",
          showSymbol: false,
          data: data.trials
            .filter(function (t) { return t.best !== null; })
            .map(function (t) { return [t.number, t.best]; })
        }
      ]
    });
  }

  function axisFor(spec, index) {
    var axis = { dim: index, name: spec.name };
    if (spec.type === "categorical") {
      axis.type = "category";
      axis.data = spec.choices.map(String);
    } else if (spec.log) {
      axis.type = "log";
    } else {
      axis.type = "value";
      axis.scale = true;
    }
    return axis;
  }

  function parallel(element) {
    // The objective is the first axis: an inactive conditional parameter (null) breaks a
    // line, and it must never hide the value the line is coloured by.
    var specs = data.params;
    var axes = [{ dim: 0, name: data.metric, type: "value", scale: true }];
    specs.forEach(function (spec, i) { axes.push(axisFor(spec, i + 1)); });
    var values = completed.map(function (t) { return t.value; });
    chart(element, {
      title: { text: "Parallel coordinates", left: "center", textStyle: { fontSize: 14 } },
      parallel: { left: 40, right: 60, top: 60, bottom: 30 },
      parallelAxis: axes,
      visualMap: {
        show: false,
        dimension: 0,
        min: Math.min.apply(null, values),
        max: Math.max.apply(null, values),
        inRange: { color: data.goal === "minimize" ? ["#1a9850", "#fee08b", "#d73027"]
                                                    : ["#d73027", "#fee08b", "#1a9850"] }
      },
      series: [{
        type: "parallel",
        lineStyle: { width: 1, opacity: 0.6 },
        data: completed.map(function (t) {
          return [t.value].concat(specs.map(function (s) {
            var v = t.params[s.name];
            return v === undefined ? null : (s.type === "categorical" ? String(v) : v);
          }));
        })
      }]
    });
  }

  function slices(container) {
    data.params.forEach(function (spec) {
      var element = document.createElement("div");
      element.className = "chart slice";
      element.id = "slice-" + spec.name.replace(/[^A-Za-z0-9_-]/g, "_");
      container.appendChild(element);
      var xAxis = spec.type === "categorical"
        ? { type: "category", data: spec.choices.map(String), name: spec.name }
        : { type: spec.log ? "log" : "value", scale: true, name: spec.name };
      xAxis.nameLocation = "middle";
      xAxis.nameGap = 25;
      chart(element, {
        title: { text: spec.name, left: "center", textStyle: { fontSize: 13 } },
        tooltip: { trigger: "item" },
        grid: { left: 55, right: 15, top: 35, bottom: 40 },
        xAxis: xAxis,
        yAxis: { type: "value", scale: true, name: data.metric },
        series: [{
          type: "scatter",
          symbolSize: 6,
          data: completed
            .filter(function (t) { return t.params[spec.name] !== undefined; })
            .map(function (t) {
              var x = t.params[spec.name];
              return [spec.type === "categorical" ? String(x) : x, t.value];
            })
        }]
      });
    });
  }

  var historyElement = document.getElementById("chart-history");
  var parallelElement = document.getElementById("chart-parallel");
  var slicesElement = document.getElementById("chart-slices");
  if (completed.length === 0) {
    empty(historyElement, "No completed trial yet.");
    empty(parallelElement, "No completed trial yet.");
    empty(slicesElement, "No completed trial yet.");
    return;
  }
  history(historyElement);
  parallel(parallelElement);
  slices(slicesElement);
}());
