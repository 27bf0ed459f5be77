// The auditor's charts (统计图表): reads the figures from the console's JSON (the URL in the
// container's data-source) and draws each `.chart[data-chart]` with Apache ECharts (vendored).
// No inline script anywhere (the console's CSP is script-src 'self'); words come from data-
// attributes the server wrote in the person's language; every chart has a table beside it.
"use strict";

(function () {
  var container = document.getElementById("charts");
  if (!container || typeof echarts === "undefined") {
    return;
  }

  function percent(rate) {
    return Math.round(rate * 1000) / 10;
  }

  var builders = {
    queries: function (data) {
      return {
        tooltip: { trigger: "axis" },
        legend: { type: "scroll", bottom: 0 },
        grid: { left: 48, right: 16, top: 16, bottom: 48 },
        xAxis: { type: "category", data: data.queries.days },
        yAxis: { type: "value", minInterval: 1 },
        series: data.queries.series.map(function (s) {
          return { name: s.name, type: "bar", stack: "queries", barMaxWidth: 56, data: s.counts };
        }),
      };
    },
    denials: function (data) {
      return {
        tooltip: { trigger: "axis" },
        grid: { left: 160, right: 16, top: 16, bottom: 32 },
        xAxis: { type: "value", minInterval: 1 },
        yAxis: { type: "category", inverse: true, data: data.denials.map(function (d) { return d.label; }) },
        series: [{ type: "bar", barMaxWidth: 40, data: data.denials.map(function (d) { return d.count; }) }],
      };
    },
    exempt: function (data, element) {
      return {
        tooltip: { trigger: "axis" },
        grid: { left: 48, right: 16, top: 16, bottom: 64 },
        xAxis: { type: "category", data: data.exempt.map(function (d) { return d.name; }), axisLabel: { interval: 0, rotate: 20 } },
        yAxis: { type: "value", max: 100, name: element.dataset.label },
        series: [{ type: "bar", barMaxWidth: 56, data: data.exempt.map(function (d) { return percent(d.rate); }) }],
      };
    },
    applications: function (data, element) {
      return {
        tooltip: { trigger: "axis" },
        legend: { bottom: 0 },
        grid: { left: 48, right: 16, top: 16, bottom: 72 },
        xAxis: { type: "category", data: data.applications.map(function (d) { return d.name; }), axisLabel: { interval: 0, rotate: 20 } },
        yAxis: { type: "value", minInterval: 1 },
        series: [
          { name: element.dataset.pending, type: "bar", barMaxWidth: 56, data: data.applications.map(function (d) { return d.pending - d.overdue; }), stack: "a" },
          { name: element.dataset.overdue, type: "bar", data: data.applications.map(function (d) { return d.overdue; }), stack: "a", itemStyle: { color: "#b3261e" } },
        ],
      };
    },
  };

  fetch(container.dataset.source, { credentials: "same-origin", headers: { accept: "application/json" } })
    .then(function (answer) {
      if (!answer.ok) {
        throw new Error("dashboard.json: " + answer.status);
      }
      return answer.json();
    })
    .then(function (data) {
      container.querySelectorAll(".chart[data-chart]").forEach(function (element) {
        var build = builders[element.dataset.chart];
        if (!build) {
          return;
        }
        var chart = echarts.init(element, null, { renderer: "svg" });
        chart.setOption(build(data, element));
        element.dataset.drawn = "true";
        window.addEventListener("resize", function () { chart.resize(); });
      });
    })
    .catch(function (err) {
      container.dataset.failed = String(err);
    });
})();
